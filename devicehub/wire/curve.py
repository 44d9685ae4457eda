"""
ZeroMQ CURVE for the broker's links: keys on disk, and the broker's ZAP handler.

A key directory (made by C{devicehub keygen DIR}) holds::

    broker.key            the broker's public key      every process needs it
    broker.key_secret     the broker's key pair        only the broker
    client.key            a client's public key
    client.key_secret     a client's key pair          nodes, api processes, Demand, the CLI
    authorized/*.key      public keys the broker lets in (keygen authorizes client.key)

With C{--curve-keys DIR} the broker's sockets are CURVE servers and accept only the
clients whose public key is in C{authorized/}; everything on the wire is encrypted.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85
from twisted.logger import Logger

from devicehub.common.logs import Throttled
from devicehub.wire.zmqsocket import ZmqSocket

log = Logger()
throttled = Throttled(log)

BROKER = "broker"
CLIENT = "client"
AUTHORIZED = "authorized"
ZAP_ADDRESS = "inproc://zeromq.zap.01"


class MissingKeys(ValueError):
    """A key directory that lacks what this process needs."""


@dataclass(frozen=True)
class CurveKeys:
    """The keys one socket uses: a server's own pair, or a client's pair and the server's public key."""

    public: bytes
    secret: bytes
    serverKey: bytes | None = None
    """The broker's public key, for a client; None for the broker itself."""

    def apply(self, socket: zmq.Socket) -> None:
        """Configure C{socket} (before it binds or connects)."""
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret
        if self.serverKey is None:
            socket.curve_server = True
        else:
            socket.curve_serverkey = self.serverKey


def _load(path: Path) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise MissingKeys(f"{path} is missing (make keys with: devicehub keygen {path.parent})")
    return zmq.auth.load_certificate(path)


def serverKeys(directory: str | Path) -> CurveKeys:
    """The broker's keys in C{directory}."""
    public, secret = _load(Path(directory) / f"{BROKER}.key_secret")
    if not (Path(directory) / AUTHORIZED).is_dir():
        raise MissingKeys(f"{Path(directory) / AUTHORIZED} is missing")
    return CurveKeys(public, secret)


def clientKeys(directory: str | Path, name: str = CLIENT) -> CurveKeys:
    """A client's keys in C{directory}, with the broker's public key."""
    public, secret = _load(Path(directory) / f"{name}.key_secret")
    serverKey, _ = _load(Path(directory) / f"{BROKER}.key")
    return CurveKeys(public, secret, serverKey)


def keygen(directory: str | Path, client: str = CLIENT) -> list[Path]:
    """
    Make the broker's key pair (if there is none yet) and the key pair of client
    C{client} (if there is none yet), and authorize that client. Return new files.
    """
    directory = Path(directory)
    authorized = directory / AUTHORIZED
    authorized.mkdir(parents=True, exist_ok=True)
    made = []
    for name in (BROKER, client):
        if not (directory / f"{name}.key_secret").exists():
            public, secret = zmq.auth.create_certificates(directory, name)
            Path(secret).chmod(0o600)
            made += [Path(public), Path(secret)]
    grant = authorized / f"{client}.key"
    if not grant.exists():
        shutil.copyfile(directory / f"{client}.key", grant)
        made.append(grant)
    return made


class ZapHandler:
    """
    The broker's ZeroMQ authentication handler (ZAP, RFC 27), in the reactor:
    admits a CURVE client only when its public key is in C{authorized}, read
    afresh for each handshake so that keys can be added or removed live.
    """

    def __init__(self, reactor, authorized: Path) -> None:
        self.authorized = authorized
        self.socket = ZmqSocket(reactor, zmq.REP, self.request, bind=[ZAP_ADDRESS])

    def request(self, raw: list[bytes]) -> None:
        version, rid = (raw + [b"", b""])[:2]
        allowed = (
            len(raw) >= 7
            and version == b"1.0"
            and raw[5] == b"CURVE"
            and z85.encode(raw[6]) in zmq.auth.load_certificates(self.authorized)
        )
        if not allowed:
            address = raw[3].decode(errors="replace") if len(raw) > 3 else "?"
            throttled.warn("Refused the ZeroMQ peer at {address}: no authorized CURVE key", address=address)
        status = (b"200", b"OK") if allowed else (b"400", b"not authorized")
        self.socket.sendFrames([b"1.0", rid, *status, b"", b""])

    def close(self) -> None:
        self.socket.shutdown()
