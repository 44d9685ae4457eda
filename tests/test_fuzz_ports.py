"""Random bytes and random ZeroMQ frames at every port of a running hub; it must keep serving."""

import json
import random

import pytest_twisted
import treq
import zmq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool

from devicehub import OK, Demand, Reply

from devicehub.wire import frames
from devicehub.wire.zmqsocket import ZmqSocket

from .support import connect, eventually, free_ports, pause, start_twistd


class Spray(Protocol):
    """Writes some bytes, then closes (or lets the server close) the connection."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(self.payload)
        reactor.callLater(0.05, self.transport.loseConnection)

    def connectionLost(self, reason=None):
        self.done.callback(None)


def garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 4000))
    if kind == 1:  # line-shaped garbage
        return b"\n".join(rng.randbytes(rng.randrange(0, 60)) for _ in range(rng.randrange(1, 30))) + b"\n"
    if kind == 2:  # JSON-ish
        return rng.choice([b'{"type":"login","imei":', b'{"type":"ack","ident":1e999}\n', b"[" * 5000 + b"\n",
                           b'{"type":"login","imei":"x"}\n{"type":"ack","ident":"a"}\n', b"\x00" * 100 + b"\n"])
    if kind == 3:  # HTTP-ish
        return rng.choice([b"GET / HTTP/1.1\r\n\r\n", b"POST /devices/x/commands HTTP/1.1\r\nContent-Length: 99999\r\n\r\n{",
                           b"GET /devices?num=" + b"9" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff\xfe HTTP/1.1\r\n\r\n"])
    return b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f" + rng.randbytes(rng.randrange(0, 200))  # ZMTP-ish


def random_frames(rng: random.Random) -> list[bytes]:
    kinds = sorted(frames.SCHEMAS) + [b"nope", b""]
    shape = rng.randrange(4)
    if shape == 0:
        return [rng.randbytes(rng.randrange(0, 30)) for _ in range(rng.randrange(1, 6))]
    if shape == 1:  # right version and kind, body anything
        header = b"DH3 " + rng.choice(kinds) + b" " + rng.randbytes(rng.randrange(0, 8))
        return [header + b"\n" + rng.randbytes(rng.randrange(0, 50)), rng.randbytes(rng.randrange(0, 50))][: rng.randrange(1, 3)]
    if shape == 2:  # well-formed results for requests nobody made (or that timed out long ago)
        return frames.encode(b"result", b"%x" % rng.randrange(100), {"imei": "x", "result": rng.choice(["ok", "no", "timeout", "?"]), "data": None})
    return rng.choice([[b"DH1", b"send", b"1", b"{}"], [b"DH2 send 1", b"{}"]])[: rng.randrange(1, 5)]  # another version


@pytest_twisted.ensureDeferred
async def test_hub_survives_random_bytes_and_frames_on_every_port():
    rng = random.Random(20261124)
    devices_port, http_port, frontend_port, backend_port = free_ports(4)
    frontend, backend = f"tcp://127.0.0.1:{frontend_port}", f"tcp://127.0.0.1:{backend_port}"
    hub = start_twistd(["--devices", f"tcp:{devices_port}:interface=127.0.0.1",
                        "--http", f"tcp:{http_port}:interface=127.0.0.1",
                        "--frontend", frontend, "--backend", backend, "--login-timeout", "2"])
    peers = []
    try:
        await eventually(lambda: "Broker warmed up" in hub.output, 20)
        device = await connect(devices_port, "survivor", reply="still here")
        # raw bytes at every TCP port, ZeroMQ ones included
        for port in (devices_port, http_port, frontend_port, backend_port):
            for _ in range(6):
                sprays = [Spray(garbage(rng)) for _ in range(25)]
                for spray in sprays:
                    connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), spray)
                await gatherResults([spray.done for spray in sprays])
        # well-behaved ZeroMQ peers saying random things to both broker sockets
        for address in (frontend, backend):
            for _ in range(3):
                peer = ZmqSocket(reactor, zmq.DEALER, lambda raw: None, connect=[address])
                peers.append(peer)
                for _ in range(200):
                    try:
                        peer.sendFrames(random_frames(rng))
                    except zmq.Again:
                        await pause()
        await pause(0.5)
        # it still serves, over every path
        demand = Demand(frontend, timeout=5)
        assert await demand.request("survivor", "0x10") == Reply(OK, "still here")
        assert await demand.gettotal() == 1
        demand.close()
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.client.HTTPClient(Agent(reactor, pool=pool)).post(
            f"http://127.0.0.1:{http_port}/devices/survivor/commands", data=b'{"instruct":"0x11"}'
        )
        assert response.code == 200 and json.loads(await response.content()) == {"result": "ok", "reply": "still here"}
        await pool.closeCachedConnections()
        other = await connect(devices_port, "newcomer", reply=1)
        await other.close()
        await device.close()
        assert not hub.ended.called
        assert "Traceback" not in hub.output and "Unhandled" not in hub.output, hub.output[-3000:]
    finally:
        for peer in peers:
            peer.shutdown()
        await hub.stop()
