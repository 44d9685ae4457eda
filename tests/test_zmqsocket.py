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


@pytest_twisted.ensureDeferred
async def test_batch_done_follows_each_read_that_handled_messages():
    seen = []
    router = ZmqSocket(reactor, zmq.ROUTER, lambda frames: seen.append(frames[-1]), bind=[LOCAL],
                       batchDone=lambda: seen.append("done"))
    dealer = ZmqSocket(reactor, zmq.DEALER, lambda frames: None, connect=[router.lastEndpoint])
    try:
        for i in range(50):
            dealer.sendFrames([b"%d" % i])
        for _ in range(100):
            if len([entry for entry in seen if entry != "done"]) == 50:
                break
            await pause(0.02)
        messages = [entry for entry in seen if entry != "done"]
        assert messages == [b"%d" % i for i in range(50)]
        # once after every read that handled any: never first, never twice in a row, last
        assert seen[0] != "done" and seen[-1] == "done"
        assert all(not (a == b == "done") for a, b in zip(seen, seen[1:]))
    finally:
        dealer.shutdown()
        router.shutdown()
