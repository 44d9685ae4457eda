"""Devices over TLS, through an ssl: endpoint string with a certificate made here."""

import datetime

import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ClientEndpoint

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
