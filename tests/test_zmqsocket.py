"""L{ZmqSocket} in the real reactor over real ZeroMQ."""

import pytest
import pytest_twisted
import zmq
from twisted.internet import reactor

from devicehub.wire.zmqsocket import ZmqSocket

from .support import LOCAL, pause


def countingReads(socket: ZmqSocket) -> list[None]:
    """Record each time the reactor asks C{socket} to read."""
    reads: list[None] = []
    doRead = socket.doRead

    def counted() -> None:
        reads.append(None)
        doRead()

    socket.doRead = counted
    return reads


@pytest.mark.parametrize(
    "bound, peer",
    [(zmq.PUB, None), (zmq.PUB, zmq.SUB), (zmq.ROUTER, None), (zmq.ROUTER, zmq.DEALER)],
    ids=["PUB", "PUB-SUB", "ROUTER", "ROUTER-DEALER"],
)
@pytest_twisted.ensureDeferred
async def test_idle_sockets_leave_the_reactor_asleep(bound, peer):
    # ZeroMQ signals a socket's FD for its own commands too (a bind done, a peer
    # attaching); a socket that never processes them keeps its FD readable and the
    # reactor spinning.
    sockets = [ZmqSocket(reactor, bound, lambda frames: None, bind=[LOCAL])]
    if peer is not None:
        sockets.append(ZmqSocket(reactor, peer, lambda frames: None, connect=[sockets[0].lastEndpoint]))
    try:
        await pause(0.2)
        reads = [countingReads(socket) for socket in sockets]
        await pause(0.3)
        assert max(map(len, reads)) <= 3, [len(counted) for counted in reads]
    finally:
        for socket in sockets:
            socket.shutdown()
