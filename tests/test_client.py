"""Demand's deadlines and answer handling, against a scripted fake broker."""

import pytest
import pytest_twisted
import zmq
from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from devicehub import OK, BrokerUnavailable, Demand, RequestRejected
from devicehub.wire import frames
from devicehub.wire.frames import Message
from devicehub.wire.link import Link
from devicehub.wire.zmqsocket import ZmqSocket

from .support import LOCAL, eventually, pause


class FakeBroker:
    """A ROUTER that records requests and answers only when told to."""

    def __init__(self, address=LOCAL):
        self.requests = []
        self.socket = ZmqSocket(reactor, zmq.ROUTER, self.requests.append, bind=[address])

    @property
    def address(self):
        return self.socket.lastEndpoint

    def answer(self, request, kind, body):
        client, *message = request
        rid = frames.decode(message).rid
        self.socket.sendFrames([client, *frames.encode(kind, rid, body)])

    def close(self):
        self.socket.shutdown()


@pytest.fixture
def broker():
    broker = FakeBroker()
    yield broker
    broker.close()


@pytest_twisted.ensureDeferred
async def test_deadline_is_the_calls_timeout_plus_margin(broker):
    clock = Clock()
    demand = Demand(broker.address, timeout=2, clock=clock)
    outcomes = []
    demand.send("abc", "0x10").addErrback(outcomes.append)
    demand.send("abc", "0x10", timeout=5).addErrback(outcomes.append)
    demand.gettotal().addErrback(outcomes.append)
    await eventually(lambda: len(broker.requests) == 3)
    clock.advance(2 + demand.margin - 0.01)
    assert outcomes == []
    clock.advance(0.02)
    assert len(outcomes) == 2 and all(o.check(BrokerUnavailable) for o in outcomes)
    clock.advance(3)
    assert len(outcomes) == 3 and outcomes[2].check(BrokerUnavailable)
    assert "within 6 s" in str(outcomes[2].value)
    # answers that come after the deadline are dropped quietly
    for request in broker.requests:
        broker.answer(request, b"reply", {"result": "ok"})
    demand.close()


@pytest_twisted.ensureDeferred
async def test_answers_are_matched_to_calls_in_any_order(broker):
    demand = Demand(broker.address, timeout=5)
    first = demand.find("one")
    second = demand.gettotal()
    await eventually(lambda: len(broker.requests) == 2)
    broker.answer(broker.requests[1], b"reply", {"total": 7})
    broker.answer(broker.requests[0], b"reply", {"result": "ok"})
    assert await second == 7
    assert await first == OK
    demand.close()


@pytest_twisted.ensureDeferred
async def test_broker_errors_and_bad_answers(broker):
    demand = Demand(broker.address, timeout=5)
    rejected = demand.gettotal()
    refused = demand.gettotal()
    nonsense = demand.find("abc")
    await eventually(lambda: len(broker.requests) == 3)
    broker.answer(broker.requests[0], b"error", {"error": "bad", "code": "invalid"})
    broker.answer(broker.requests[1], b"error", {"error": "shutting down", "code": "unavailable"})
    broker.answer(broker.requests[2], b"reply", {"result": "maybe"})
    with pytest.raises(RequestRejected):
        await rejected
    with pytest.raises(BrokerUnavailable, match="shutting down"):
        await refused
    with pytest.raises(BrokerUnavailable, match="unknown result"):
        await nonsense
    demand.close()


@pytest_twisted.ensureDeferred
async def test_a_call_that_failed_is_never_delivered_later():
    """Calls made while no broker is connected are not queued for a later one."""
    address = _vacated()
    clock = Clock()
    demand = Demand(address, timeout=1, clock=clock)
    failed = demand.send("abc", "0x10")
    failed.addErrback(lambda f: f.trap(BrokerUnavailable))
    clock.advance(5)
    assert failed.called
    late = await _rebind(address)
    alive = demand.gettotal()
    await eventually(lambda: late.requests)
    assert [frames.decode(r[1:]).kind for r in late.requests] == [b"total"]
    late.answer(late.requests[0], b"reply", {"total": 0})
    assert await alive == 0
    demand.close()
    late.close()


@pytest_twisted.ensureDeferred
async def test_a_call_its_caller_cancelled_is_forgotten_and_never_sent_later():
    address = _vacated()
    clock = Clock()
    demand = Demand(address, timeout=5, clock=clock)
    unsent = demand.send("abc", "0x10")  # no broker yet: it waits to be sent
    unsent.cancel()
    with pytest.raises(CancelledError):
        await unsent
    late = await _rebind(address)
    sent, answered = demand.find("abc"), demand.gettotal()
    await eventually(lambda: len(late.requests) == 2)
    assert [frames.decode(r[1:]).kind for r in late.requests] == [b"find", b"total"]
    sent.cancel()
    with pytest.raises(CancelledError):
        await sent
    assert list(demand._calls.pending) == [frames.decode(late.requests[1][1:]).rid]  # forgotten at once
    late.answer(late.requests[0], b"reply", {"result": "ok"})  # dropped: nobody waits for it
    late.answer(late.requests[1], b"reply", {"total": 3})
    assert await answered == 3
    clock.advance(10)  # past every deadline: nothing left to fail
    assert demand._calls.pending == {}
    demand.close()
    late.close()


def _vacated() -> str:
    """The address of a fake broker that has gone: nothing answers there until one binds it again."""
    probe = FakeBroker()
    address = probe.address
    probe.close()
    return address


async def _rebind(address):
    """Bind a fake broker on C{address} again, once the old port is released."""
    for _ in range(100):
        try:
            return FakeBroker(address)
        except zmq.ZMQError:
            await pause()
    raise AssertionError(f"could not bind {address} again")


@pytest_twisted.ensureDeferred
async def test_a_link_holds_what_is_sent_while_it_hands_a_batch_over_and_sends_it_after(broker):
    """As ZmqSocket.doRead drives it: messages handed to deliver one by one, then batchDone."""
    events, notSent = [], []

    def deliver(message):
        events.append(("answer", message.rid))
        link.send(Message(b"total", b"next-" + message.rid, {}))

    link = Link(reactor, broker.address, deliver, notSent=notSent.append)
    sendFrames = link._socket.sendFrames
    link._socket.sendFrames = lambda raw: (events.append(("sent", frames.decode(raw).rid)), sendFrames(raw))
    try:
        await pause(0.2)  # connected
        for rid in (b"1", b"2"):
            link.received(frames.encode(b"reply", rid, {"result": "ok"}))
        assert events == [("answer", b"1"), ("answer", b"2")]  # nothing sent while the batch is handled
        link._socket.batchDone()
        assert events[2:] == [("sent", b"next-1"), ("sent", b"next-2")]
        await eventually(lambda: len(broker.requests) == 2)
        assert [frames.decode(r[1:]).rid for r in broker.requests] == [b"next-1", b"next-2"]
        # What ZeroMQ refuses at the end of the batch goes to notSent; outside a batch, send is direct.
        link._socket.sendFrames = lambda frames: (_ for _ in ()).throw(zmq.Again())
        link.received(frames.encode(b"reply", b"3", {"result": "ok"}))
        link._socket.batchDone()
        assert [message.rid for message in notSent] == [b"next-3"]
        with pytest.raises(zmq.Again):
            link.send(Message(b"total", b"4", {}))
    finally:
        await link.close()


@pytest_twisted.ensureDeferred
async def test_calls_made_while_answers_are_handled_are_answered_even_when_zeromq_refused_them_once(broker):
    demand = Demand(broker.address, timeout=5)
    link = demand._calls.brokers.links[0]
    first = demand.gettotal()
    await eventually(lambda: len(broker.requests) == 1)
    refused = []
    sendFrames = link._socket.sendFrames

    def refuseOnce(frames):
        if not refused:
            refused.append(frames)
            raise zmq.Again()
        sendFrames(frames)

    # The answer's callback makes the next call, which is held for the end of the batch,
    # refused by ZeroMQ then (as with no broker connected), and sent again shortly after.
    second = first.addCallback(lambda total: (link._socket.__setattr__("sendFrames", refuseOnce), demand.gettotal())[1])
    broker.answer(broker.requests[0], b"reply", {"total": 1})
    await eventually(lambda: len(broker.requests) == 2)
    assert len(refused) == 1
    broker.answer(broker.requests[1], b"reply", {"total": 2})
    assert await second == 2
    demand.close()
