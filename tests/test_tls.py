"""Devices over TLS, through an ssl: endpoint string with a certificate made here."""

import datetime
import json

import pytest
import pytest_twisted
import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ClientEndpoint
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from devicehub import OK, Demand, Reply

from .support import Hub, connect, eventually


def make_certificate(directory):
    """A self-signed certificate for localhost; returns (key path, cert path, PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(pem)
    return key_path, cert_path, pem


@pytest_twisted.ensureDeferred
async def test_device_logs_in_and_acks_over_tls(tmp_path):
    key, cert, pem = make_certificate(tmp_path)
    hub = Hub(api=False)
    hub.broker.startService()
    node = await hub.addNode("tls-node", devices=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    demand = Demand(hub.frontend, timeout=5)
    try:
        port = node.listener.port.getHost().port
        options = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(pem))
        device = await connect(port, "secure1", endpoint=SSL4ClientEndpoint(reactor, "127.0.0.1", port, options), reply="tls")
        await eventually(lambda: hub.directory.owner("secure1") is not None)
        assert await demand.request("secure1", "0x10") == Reply(OK, "tls")
        await device.close()
    finally:
        demand.close()
        await hub.stop()


@implementer(IPolicyForHTTPS)
class TrustOnly:
    """Trust exactly one certificate, as a client pinned to the hub's would."""

    def __init__(self, pem):
        self.certificate = ssl.Certificate.loadPEM(pem)

    def creatorForNetloc(self, hostname, port):
        return ssl.optionsForClientTLS(hostname.decode(), trustRoot=self.certificate)


@pytest_twisted.ensureDeferred
async def test_http_api_over_tls(tmp_path):
    key, cert, pem = make_certificate(tmp_path)
    hub = await Hub(http=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}").start()
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = treq.client.HTTPClient(Agent(reactor, contextFactory=TrustOnly(pem), pool=pool))
    try:
        device = await connect(hub.devicePort, "dev1", reply="secure")
        await eventually(lambda: hub.directory.owner("dev1") is not None)
        base = f"https://localhost:{hub.api.listener.port.getHost().port}"
        response = await http.post(base + "/devices/dev1/commands", data=b'{"instruct":"0x10"}')
        assert response.code == 200
        assert json.loads(await response.content()) == {"result": "ok", "reply": "secure"}
        plain = treq.client.HTTPClient(Agent(reactor, pool=pool))
        with pytest.raises(Exception):  # plain HTTP to the TLS port gets no answer
            await plain.get(base.replace("https", "http") + "/health", timeout=2)
        await device.close()
    finally:
        await pool.closeCachedConnections()
        await hub.stop()
