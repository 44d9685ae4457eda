"""
Every request gets exactly one answer, whatever the order of acks, disconnects,
timeouts and node deaths: a Hypothesis state machine drives the broker's logic.
"""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from twisted.internet.task import Clock

from devicehub.wire import frames
from devicehub.broker.broker import Broker
from devicehub.broker.settings import BrokerSettings
from devicehub.common.metrics import Metrics

NODES = [b"N1", b"N2", b"N3"]
IMEIS = ["a", "b", "c", "d"]
TTL = 3.0


class BrokerMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.clock = Clock()
        self.answers: dict[bytes, list] = {}
        self.asked: set[bytes] = set()
        self.commands: list[tuple[bytes, bytes, str]] = []  # (node, broker rid, imei) delivered to nodes
        self.alive = set()
        self.lastId = 0
        self.connections = 0
        self.longestWait = 0.0
        self.broker = Broker(self.clock, self._toClient, self._toNode, BrokerSettings(nodeTtl=TTL, maxClientInflight=50),
                             Metrics())

    def _toClient(self, client, message):
        decoded = frames.decode(message.frames())
        self.answers.setdefault(decoded.rid, []).append((decoded.kind, decoded.body))
        return True

    def _toNode(self, node, message):
        if node not in self.alive:
            return False  # a dead node's socket is gone: ROUTER_MANDATORY reports it
        decoded = frames.decode(message.frames())
        if decoded.kind == b"command":
            self.commands.append((node, decoded.rid, decoded.body["imei"]))
        return True

    def _fromNode(self, node, kind, body, rid=b""):
        self.broker.fromNode([node, *frames.encode(kind, rid, body)])

    @rule(node=st.sampled_from(NODES))
    def node_starts(self, node):
        self.alive.add(node)
        self._fromNode(node, b"hello", {"node": node.decode(), "instance": "i", "devices": []})

    @rule(node=st.sampled_from(NODES), imei=st.sampled_from(IMEIS))
    def login(self, node, imei):
        if node in self.alive:
            self.connections += 1
            self._fromNode(node, b"online", {"imei": imei, "conn": self.connections, "since": self.clock.seconds()})

    @rule(node=st.sampled_from(NODES), imei=st.sampled_from(IMEIS), conn=st.integers(0, 20))
    def logout(self, node, imei, conn):
        if node in self.alive:
            self._fromNode(node, b"offline", {"imei": imei, "conn": conn})

    @rule(imei=st.sampled_from(IMEIS + ["ghost"]), timeout=st.sampled_from([0.5, 1.0, 5.0]), wait=st.booleans())
    def request(self, imei, timeout, wait):
        self.lastId += 1
        rid = b"%d" % self.lastId
        self.asked.add(rid)
        self.longestWait = max(self.longestWait, timeout)
        body = {"imei": imei, "instruct": "x", "data": None, "timeout": timeout, "wait": wait}
        self.broker.fromClient([b"client", *frames.encode(b"send", rid, body)])

    @rule(kind=st.sampled_from([b"find", b"total", b"list"]))
    def query(self, kind):
        self.lastId += 1
        rid = b"%d" % self.lastId
        self.asked.add(rid)
        body = {"imei": "a"} if kind == b"find" else {"num": 2, "page": 0} if kind == b"list" else {}
        self.broker.fromClient([b"client", *frames.encode(kind, rid, body)])

    @precondition(lambda self: self.commands)
    @rule(data=st.data(), result=st.sampled_from(["ok", "timeout", "no", "busy", "bogus"]), twice=st.booleans())
    def node_answers(self, data, result, twice):
        node, rid, imei = data.draw(st.sampled_from(self.commands))
        if node in self.alive:
            for _ in range(2 if twice else 1):  # a duplicate result must not answer twice
                self._fromNode(node, b"result", {"imei": imei, "result": result, "data": None}, rid)

    @rule(node=st.sampled_from(NODES), rid=st.binary(max_size=3), imei=st.sampled_from(IMEIS))
    def stray_result(self, node, rid, imei):
        if node in self.alive:
            self._fromNode(node, b"result", {"imei": imei, "result": "ok", "data": None}, rid)

    @rule(node=st.sampled_from(NODES))
    def node_dies_silently(self, node):
        self.alive.discard(node)

    @rule(node=st.sampled_from(NODES))
    def node_says_bye(self, node):
        if node in self.alive:
            self._fromNode(node, b"bye", {})

    @rule(seconds=st.sampled_from([0.1, 0.6, 1.2, 3.5]))
    def time_passes(self, seconds):
        self.clock.advance(seconds)
        for node in self.alive:
            self._fromNode(node, b"ping", {})
        self.broker.expireNodes()

    @invariant()
    def never_answered_twice(self):
        for rid, answers in self.answers.items():
            assert len(answers) == 1, (rid, answers)
        assert set(self.answers) <= self.asked

    def teardown(self):
        if not hasattr(self, "broker"):
            return
        # no node answers any more: everything must still be answered, once
        self.alive.clear()
        self.clock.advance(self.longestWait + self.broker.grace + TTL + 1)
        self.broker.expireNodes()
        self.clock.advance(self.longestWait + self.broker.grace + 1)
        assert set(self.answers) == self.asked, self.asked - set(self.answers)
        self.never_answered_twice()
        assert self.broker.routed == {} and self.clock.getDelayedCalls() == []


BrokerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestEveryRequestGetsExactlyOneAnswer = BrokerMachine.TestCase
