"""
Several brokers, with a clock (CONTRACT §6): a Demand moves its calls to another broker
when its broker goes silent, with the same request; a node executes a repeated request
once (L{devicehub.node.repeats}); a repeated queued request queues one command.
"""

import pytest
import zmq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from devicehub import BrokerUnavailable, Demand, Reply
from devicehub.client import failover
from devicehub.common.metrics import Metrics
from devicehub.common.results import NO, OK, TIMEOUT
from devicehub.node.node import Node
from devicehub.node.repeats import KEEP, Repeats
from devicehub.wire.frames import Message


class FakeLink:
    """A link to one broker that keeps what is sent; C{connected} False: ZeroMQ has no peer."""

    made: list["FakeLink"] = []

    def __init__(self, reactor, address, deliver, *, local=None, curve=None, **_):
        self.address = address
        self.deliver = deliver
        self.sent: list[Message] = []
        self.connected = True
        self.closed = False
        FakeLink.made.append(self)

    def send(self, message: Message) -> None:
        if not self.connected:
            raise zmq.Again()
        self.sent.append(message)

    def calls(self) -> list[Message]:
        return [message for message in self.sent if message.kind != b"ping"]

    def pongs(self, warm: bool = True) -> None:
        """Answer every ping sent so far."""
        for message in self.sent:
            if message.kind == b"ping":
                self.deliver(Message(b"reply", message.rid, {"warm": warm}))
        self.sent = self.calls()

    def close(self):
        self.closed = True


@pytest.fixture
def brokers(monkeypatch):
    FakeLink.made = []
    monkeypatch.setattr(failover, "Link", FakeLink)
    clock = Clock()
    demand = Demand("tcp://b1:5555,tcp://b2:5555", timeout=10, reactor=clock, clock=clock)
    one, two = FakeLink.made
    yield clock, demand, one, two
    demand.close()


def advance(clock: Clock, seconds: float, *answering: FakeLink) -> None:
    """Let C{seconds} pass in ping intervals, C{answering} brokers answering their pings."""
    for _ in range(round(seconds / failover.Brokers.interval)):
        for link in answering:
            link.pongs()
        clock.advance(failover.Brokers.interval)


def test_calls_go_to_the_first_broker_that_answers_named_for_the_nodes(brokers):
    clock, demand, one, two = brokers
    advance(clock, 0.5, one, two)
    answer = demand.send("dev", "0x10")
    [sent] = one.calls()
    assert two.calls() == []
    assert sent.body["request"] == sent.rid.decode() and len(sent.rid) > 16  # unique across Demands
    one.deliver(Message(b"reply", sent.rid, {"result": OK, "data": None}))
    assert answer.result == OK


def test_a_silent_broker_is_left_within_two_seconds_and_its_calls_sent_again_alike(brokers):
    clock, demand, one, two = brokers
    advance(clock, 0.5, one, two)
    answer = demand.request("dev", "0x10", {"n": 1})
    [first] = one.calls()
    advance(clock, 1.5, two)  # broker one died: no pong, no answer
    [again] = two.calls()
    assert (again.rid, again.body) == (first.rid, first.body)
    later = demand.health()
    later.addErrback(lambda failure: failure.trap(BrokerUnavailable))
    assert len(two.calls()) == 2  # new calls go to broker two as well
    two.deliver(Message(b"reply", again.rid, {"result": OK, "data": "done"}))
    assert answer.result == Reply(OK, "done")
    one.deliver(Message(b"reply", first.rid, {"result": TIMEOUT, "data": None}))  # a late one: ignored
    assert answer.result == Reply(OK, "done")


def test_a_disconnected_broker_is_left_at_once(brokers):
    clock, demand, one, two = brokers
    advance(clock, 0.5, one, two)
    one.connected = False
    answer = demand.send("dev", "0x10")
    [sent] = two.calls()
    two.deliver(Message(b"reply", sent.rid, {"result": NO}))
    assert answer.result == NO


def test_a_broker_warming_up_is_avoided_and_its_unavailable_is_asked_again_elsewhere(brokers):
    clock, demand, one, two = brokers
    one.pongs(warm=False)
    two.pongs(warm=True)
    answer = demand.find("dev")
    assert one.calls() == [] and len(two.calls()) == 1  # the warm one first
    [sent] = two.calls()
    two.deliver(Message(b"error", sent.rid, {"error": "broker shutting down", "code": "unavailable"}))
    [again] = one.calls()  # the other one, although warming up
    one.deliver(Message(b"error", again.rid, {"error": "broker starting", "code": "unavailable"}))
    assert isinstance(answer.result.value, BrokerUnavailable)  # both tried: the caller is told
    answer.addErrback(lambda failure: None)


def test_health_says_which_brokers_answer(brokers):
    clock, demand, one, two = brokers
    advance(clock, 1.5, one)
    health = demand.health()
    [sent] = one.calls()
    one.deliver(Message(b"reply", sent.rid, {"nodes": 2, "total": 5, "store": "ok"}))
    assert health.result == {"nodes": 2, "devices": 5, "store": "ok",
                             "brokers": {"tcp://b1:5555": "ok", "tcp://b2:5555": "down"}}


def test_with_one_broker_there_is_no_ping_and_no_request_name(monkeypatch):
    FakeLink.made = []
    monkeypatch.setattr(failover, "Link", FakeLink)
    clock = Clock()
    demand = Demand("tcp://b1:5555", reactor=clock, clock=clock)
    [one] = FakeLink.made
    demand.send("dev", "0x10").addErrback(lambda failure: failure.trap(BrokerUnavailable))
    clock.advance(1)
    assert [(m.kind, "request" in m.body) for m in one.sent] == [(b"send", False)]
    assert clock.getDelayedCalls() != []  # only the call's deadline
    demand.close()
    assert one.closed


# -- the node's side


def test_a_repeated_request_is_executed_once_and_answered_alike():
    clock = Clock()
    repeats = Repeats(clock)
    runs: list[Deferred] = []

    def run():
        runs.append(Deferred())
        return runs[-1]

    first = repeats.execute("dev", "r.1", run)
    second = repeats.execute("dev", "r.1", run)  # while the first is unanswered
    other = repeats.execute("other", "r.1", run)  # another device: another request
    assert len(runs) == 2
    runs[0].callback(Reply(OK, "hi"))
    assert first.result == second.result == Reply(OK, "hi")
    assert repeats.execute("dev", "r.1", run).result == Reply(OK, "hi")  # after it
    assert len(runs) == 2 and repeats.repeated == 2
    clock.advance(KEEP + 1)
    assert KEEP > 300  # longer than any caller waits, so longer than it may repeat
    repeats.execute("dev", "r.1", lambda: succeed(Reply(TIMEOUT)))
    assert len(repeats) == 2  # forgotten and taken anew; "other" is still unanswered
    runs[1].callback(Reply(NO))
    assert other.result == Reply(NO)


def test_unnamed_requests_are_not_remembered_and_the_memory_is_bounded():
    clock = Clock()
    repeats = Repeats(clock, maxKept=3)
    slow: Deferred = Deferred()
    repeats.execute("dev", "slow", lambda: slow)  # unanswered the whole time
    for n in range(10):
        repeats.execute("dev", f"r.{n}", lambda: succeed(Reply(OK)))
        repeats.execute("dev", None, lambda: succeed(Reply(OK)))
        repeats.execute("dev", "x" * 65, lambda: succeed(Reply(OK)))
    assert len(repeats) == 4  # three answers, and the unanswered one is never evicted
    ran = []
    repeat = repeats.execute("dev", "slow", lambda: ran.append(1) or succeed(Reply(OK)))
    assert ran == [] and not repeat.called
    slow.callback(Reply(OK, "late"))
    assert repeat.result == Reply(OK, "late")


def test_the_node_answers_a_repeat_through_another_broker_without_sending_it_again():
    clock = Clock()
    node = Node("n", 5.0, clock, Metrics())
    sent = []

    class Session:
        unanswered = 0

        class settings:
            maxPending = 10

        def sendCommand(self, instruct, data, timeout):
            sent.append(instruct)
            self.acked = Deferred()
            return self.acked

    node.devices["dev"] = session = Session()
    first = node.execute("dev", "0x10", None, 5.0, True, "abc.1")
    second = node.execute("dev", "0x10", None, 5.0, True, "abc.1")
    session.acked.callback(Reply(OK, "yes"))
    assert sent == ["0x10"] and first.result == second.result == Reply(OK, "yes")
    node.execute("dev", "0x10", None, 5.0, True)
    assert sent == ["0x10", "0x10"]  # unnamed: every one is executed
