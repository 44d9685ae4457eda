"""
The broker's directory and node registry at scale: chunked releases and snapshot loads
against simple models (Hypothesis state machines), and a million devices loaded and
released in reactor turns of bounded work.
"""

import gc
import time

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.task import Clock

from devicehub.broker.broker import Broker
from devicehub.broker.directory import SHARDS, Directory, NodeRecord
from devicehub.broker.settings import BrokerSettings
from devicehub.common.metrics import Metrics
from devicehub.wire.frames import Message

IMEIS = [f"86{index:013d}" for index in range(40)]
imeis = st.sampled_from(IMEIS)


class DirectoryMachine(RuleBasedStateMachine):
    """L{Directory} against a dictionary, with releases worked through a few ghosts at a time."""

    def __init__(self):
        super().__init__()
        self.directory = Directory()
        self.released: list[tuple[str, str, str]] = []
        self.directory.onReleased = lambda imei, owner, release: self.released.append(
            (imei, owner.node.name, release.reason))
        self.nodes = [NodeRecord(b"%d" % index, f"node-{index}", 0.0) for index in range(3)]
        self.model: dict[str, tuple[NodeRecord, int]] = {}
        self.releases = []
        self.expected: list[tuple[str, str, str]] = []  # what onReleased must have said once all is done

    @rule(imei=imeis, index=st.integers(0, 2), conn=st.integers(1, 3))
    def own(self, imei, index, conn):
        node = self.nodes[index]
        previous = self.directory.own(imei, node, conn, 0.0)
        expected = self.model.get(imei)
        assert (previous.node, previous.conn) == expected if expected else previous is None
        self.model[imei] = (node, conn)

    @rule(imei=imeis, index=st.integers(0, 2), conn=st.none() | st.integers(1, 3))
    def release(self, imei, index, conn):
        node, held = self.nodes[index], self.model.get(imei)
        should = held is not None and held[0] is node and conn in (None, held[1])
        assert self.directory.release(imei, node, conn) == should
        if should:
            del self.model[imei]

    @rule(index=st.integers(0, 2), reason=st.sampled_from(["node lost", "node left"]))
    def startRelease(self, index, reason):
        node = self.nodes[index]
        gone = sorted(imei for imei, (holder, _) in self.model.items() if holder is node)
        release = self.directory.startRelease(node, reason)
        assert (release is None) == (not gone)
        if release is not None:
            self.releases.append(release)
        for imei in gone:
            del self.model[imei]
            self.expected.append((imei, node.name, reason))

    @precondition(lambda self: self.releases)
    @rule(which=st.integers(0, 10), limit=st.integers(1, 7))
    def releaseSome(self, which, limit):
        release = self.releases[which % len(self.releases)]
        if self.directory.releaseSome(release, limit):
            self.releases.remove(release)

    @rule(num=st.integers(1, 12), page=st.integers(0, 6))
    def page(self, num, page):
        everyone = sorted(self.model)
        assert self.directory.page(num, page) == everyone[num * page:num * page + num]

    @invariant()
    def agrees(self):
        assert len(self.directory) == len(self.model)
        assert self.directory.page(len(IMEIS) + 1, 0) == sorted(self.model)
        for imei in IMEIS:
            owner, held = self.directory.owner(imei), self.model.get(imei)
            assert (owner.node, owner.conn) == held if held else owner is None
        for node in self.nodes:
            assert list(node.devices) == sorted(imei for imei, (holder, _) in self.model.items() if holder is node)

    def teardown(self):
        for release in self.releases:
            while not self.directory.releaseSome(release, 3):
                pass
        assert self.directory.releasing == 0
        assert sorted(self.released) == sorted(self.expected)  # once each: by a chunk or by a new login
        assert sum(map(len, self.directory._shards)) - SHARDS == len(self.directory._sorted) == len(self.model)


TestDirectory = DirectoryMachine.TestCase
TestDirectory.settings = settings(max_examples=150, stateful_step_count=60, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow])


class Peers:
    def __init__(self):
        self.sent = []

    def __call__(self, peer, message):
        self.sent.append((peer, message))
        return True


NAMES = ["a", "b", "c"]
CHUNK = 3
ROWS = 2 * CHUNK  # the rows a turn reads


class RegistryMachine(RuleBasedStateMachine):
    """
    A broker whose node registry loads snapshots and releases nodes 3 devices per turn,
    against an atomic model (what the broker did when it handled each in one turn): at
    every step no device is said to be on a node that is gone; once the work is done the
    directory is the model's. Logins are numbered in order, as time goes, so a node never
    reports a login older than one it sent in its snapshot.
    """

    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.toNode = Peers()
        self.broker = Broker(self.clock, Peers(), self.toNode, BrokerSettings(warmup=0), Metrics())
        self.registry = self.broker.registry
        self.registry.chunk = CHUNK
        self.time = 0.0
        self.conns = 0
        self.model: dict[str, tuple[str, int, float]] = {}
        self.registered: set[str] = set()

    def _login(self):
        self.time += 1
        self.conns += 1
        return self.conns, self.time

    def _own(self, name, imei, conn, since):
        current = self.model.get(imei)
        if current is not None and current[0] != name and current[2] > since:
            return
        self.model[imei] = (name, conn, since)

    def _loading(self, name):
        node = self.registry.nodes.get(name.encode())
        return node is not None and node in self.registry._loads

    @precondition(lambda self: any(not self._loading(name) for name in NAMES))
    @rule(name=st.sampled_from(NAMES), keep=st.sets(imeis, max_size=ROWS), new=st.sets(imeis, max_size=ROWS))
    def hello(self, name, keep, new):
        """
        A node (re)registers: its snapshot keeps some of what it holds, and has new logins;
        at most L{ROWS}, read in the hello's turn: the model is exact for notices that come
        once the rows are read.
        """
        if self._loading(name):
            return  # a real node says hello again only when it had no welcome
        held = {imei: (conn, since) for imei, (holder, conn, since) in self.model.items() if holder == name}
        rows = {imei: held[imei] for imei in sorted(keep)[:ROWS] if imei in held}
        for imei in sorted(new - rows.keys())[:ROWS - len(rows)]:
            rows[imei] = self._login()
        snapshot = [[imei, conn, since] for imei, (conn, since) in rows.items()]
        body = {"node": name, "instance": name, "devices": snapshot}
        self.broker.nodeMessage(name.encode(), Message(b"hello", b"", body))
        self.registered.add(name)
        for imei in held.keys() - rows.keys():
            del self.model[imei]
        for imei, (conn, since) in rows.items():
            self._own(name, imei, conn, since)

    @precondition(lambda self: self.registered)
    @rule(data=st.data(), imei=imeis)
    def login(self, data, imei):
        name = data.draw(st.sampled_from(sorted(self.registered)))
        conn, since = self._login()
        self.broker.nodeMessage(name.encode(), Message(b"online", b"", {"imei": imei, "conn": conn, "since": since}))
        self._own(name, imei, conn, since)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def logout(self, data):
        imei = data.draw(st.sampled_from(sorted(self.model)))
        name, conn, _ = self.model.pop(imei)
        self.broker.nodeMessage(name.encode(), Message(b"offline", b"", {"imei": imei, "conn": conn}))

    @precondition(lambda self: any(name in self.registered and not self._loading(name) for name in NAMES))
    @rule(name=st.sampled_from(NAMES), bye=st.booleans())
    def leave(self, name, bye):
        if name not in self.registered or self._loading(name):
            return
        if bye:
            self.broker.nodeMessage(name.encode(), Message(b"bye", b"", {}))
        else:
            self.registry.lost(self.registry.nodes[name.encode()], "test")
        self.registered.discard(name)
        self.model = {imei: held for imei, held in self.model.items() if held[0] != name}

    @precondition(lambda self: self.registry.busy)
    @rule()
    def turn(self):
        self.registry._step()

    @rule()
    def settle(self):
        self.registry.settle()
        self.agreesWithModel()

    def agreesWithModel(self):
        actual = {imei: (owner.node.name, owner.conn, owner.since)
                  for imei in IMEIS if (owner := self.broker.directory.owner(imei)) is not None}
        assert actual == self.model
        assert self.broker.directory.page(100, 0) == sorted(self.model)

    @invariant()
    def nothingOnAGoneNode(self):
        directory, live = self.broker.directory, set(self.registry.nodes.values())
        online = [imei for imei in IMEIS if directory.owner(imei) is not None]
        assert all(directory.owner(imei).node in live and not directory.owner(imei).node.leaving for imei in online)
        assert len(directory) == len(online) and directory.page(100, 0) == online
        assert directory.page(2, 1) == online[2:4]

    def teardown(self):
        self.registry.settle()
        self.agreesWithModel()


TestRegistry = RegistryMachine.TestCase
TestRegistry.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                 suppress_health_check=[HealthCheck.too_slow])


def make(chunk=3):
    clock = Clock()
    clients, nodes = Peers(), Peers()
    broker = Broker(clock, clients, nodes, BrokerSettings(warmup=0), Metrics())
    broker.registry.chunk = chunk
    return broker, clock, clients, nodes


def hello(broker, name, imeis, since=0.0):
    body = {"node": name, "instance": name, "devices": [[imei, index + 1, since] for index, imei in enumerate(imeis)]}
    broker.nodeMessage(name.encode(), Message(b"hello", b"", body))


def ask(broker, clients, kind, body):
    broker.clientMessage(b"C", Message(kind, b"r", body))
    (_, answer), = clients.sent
    clients.sent.clear()
    return answer


def test_commands_for_a_node_being_released_are_answered_no_and_not_routed():
    broker, clock, clients, nodes = make()
    hello(broker, "a", IMEIS[:30])
    assert broker.registry.busy
    broker.registry.settle()
    broker.nodeMessage(b"a", Message(b"bye", b"", {}))
    assert broker.registry.busy and broker.directory.releasing == 27  # one chunk of 3 went at once
    nodes.sent.clear()
    for imei in IMEIS[:30]:
        assert ask(broker, clients, b"find", {"imei": imei}).body == {"result": "no"}
        body = {"imei": imei, "instruct": "0x10", "data": None, "timeout": 5.0, "wait": True}
        assert ask(broker, clients, b"send", body).body == {"result": "no"}
    assert nodes.sent == [] and len(broker.directory) == 0
    assert ask(broker, clients, b"list", {"num": 10, "page": 0}).body == {"devices": [], "total": 0}
    broker.registry.settle()
    assert broker.directory.releasing == 0 and not broker.registry.busy


def test_a_device_released_then_logged_in_elsewhere_stays_on_its_new_node():
    broker, clock, clients, nodes = make()
    hello(broker, "a", IMEIS[:30])
    hello(broker, "b", [])
    broker.registry.settle()
    broker.registry.lost(broker.registry.nodes[b"a"], "test")
    moved = IMEIS[5]
    broker.nodeMessage(b"b", Message(b"online", b"", {"imei": moved, "conn": 7, "since": 1.0}))
    broker.registry.settle()
    assert broker.directory.owner(moved).node.name == "b" and len(broker.directory) == 1
    assert broker.directory.page(10, 0) == [moved]


def test_notices_during_a_snapshot_win_over_it():
    broker, clock, clients, nodes = make()
    hello(broker, "a", IMEIS[:10])
    broker.registry.settle()
    # A new hello (e.g. after a broker restart) while logins and logouts go on.
    snapshot = [[imei, 100 + index, 0.0] for index, imei in enumerate(IMEIS[:20])]
    body = {"node": "a", "instance": "a", "devices": snapshot}
    broker.nodeMessage(b"a", Message(b"hello", b"", body))
    assert broker.registry.busy
    broker.nodeMessage(b"a", Message(b"offline", b"", {"imei": IMEIS[15], "conn": 115}))  # not loaded yet
    broker.nodeMessage(b"a", Message(b"offline", b"", {"imei": IMEIS[3], "conn": 103}))  # held with conn 4 until now
    broker.nodeMessage(b"a", Message(b"online", b"", {"imei": IMEIS[12], "conn": 900, "since": 2.0}))
    broker.registry.settle()
    expected = sorted(set(IMEIS[:20]) - {IMEIS[15], IMEIS[3]})
    assert broker.directory.page(30, 0) == expected
    assert broker.directory.owner(IMEIS[12]).conn == 900 and broker.directory.owner(IMEIS[7]).conn == 107


def test_a_node_lost_while_its_snapshot_loads_leaves_nothing_behind():
    broker, clock, clients, nodes = make()
    hello(broker, "a", IMEIS)
    while len(broker.directory) < 5:
        broker.registry._step()
    assert len(broker.directory) < len(IMEIS)
    broker.registry.lost(broker.registry.nodes[b"a"], "test")
    assert len(broker.directory) == 0
    broker.registry.settle()
    assert len(broker.directory) == 0 and broker.directory.page(50, 0) == []
    assert broker.directory.releasing == 0 and not broker.registry._loads


def test_the_warm_up_lasts_until_the_snapshots_that_came_during_it_are_loaded():
    clock, clients = Clock(), Peers()
    broker = Broker(clock, clients, Peers(), BrokerSettings(warmup=1.0), Metrics())
    broker.registry.chunk = 3
    hello(broker, "a", IMEIS)
    clock.rightNow = 2.0  # past the warm-up, the snapshot's turns not run yet (advance would run them)
    missing = next(imei for imei in IMEIS if broker.directory.owner(imei) is None)
    assert ask(broker, clients, b"find", {"imei": missing}).body["code"] == "unavailable"
    assert ask(broker, clients, b"total", {}).body["code"] == "unavailable"
    clock.advance(0)
    assert ask(broker, clients, b"find", {"imei": missing}).body == {"result": "ok"}
    assert ask(broker, clients, b"total", {}).body == {"total": len(IMEIS)}
    # A snapshot that comes after the warm-up is a node coming: what it has not loaded is not online yet.
    hello(broker, "b", [f"99{index:013d}" for index in range(30)])
    assert ask(broker, clients, b"find", {"imei": "990000000000029"}).body == {"result": "no"}
    clock.advance(0)
    assert ask(broker, clients, b"find", {"imei": "990000000000029"}).body == {"result": "ok"}


def test_a_big_snapshot_comes_in_parts_and_is_loaded_as_they_come():
    """A node's snapshot in parts (hello, then snapshot messages): no huge message to decode in one turn."""
    broker, clock, clients, nodes = make()
    rows = [[imei, index + 1, 0.0] for index, imei in enumerate(IMEIS[:30])]
    body = {"node": "a", "instance": "a", "devices": rows[:10], "parts": 2}
    broker.nodeMessage(b"a", Message(b"hello", b"", body))
    broker.registry.settle()  # the first part read; the load waits, off the turns
    assert not broker.registry.busy and broker.registry._loads
    broker.nodeMessage(b"a", Message(b"snapshot", b"", {"devices": rows[20:], "part": 3}))  # out of turn: dropped
    broker.nodeMessage(b"a", Message(b"offline", b"", {"imei": IMEIS[15], "conn": 16}))  # a notice between parts
    broker.nodeMessage(b"a", Message(b"snapshot", b"", {"devices": rows[10:20], "part": 1}))
    broker.registry.settle()
    assert broker.registry._loads and len(broker.directory) == 0  # owned only once every part is read
    broker.nodeMessage(b"a", Message(b"snapshot", b"", {"devices": rows[20:], "part": 2}))
    broker.registry.settle()
    assert not broker.registry._loads
    assert broker.directory.page(50, 0) == sorted(set(IMEIS[:30]) - {IMEIS[15]})
    broker.nodeMessage(b"a", Message(b"snapshot", b"", {"devices": rows[:1], "part": 3}))  # no load: dropped
    assert len(broker.directory) == 29


def test_a_node_sends_a_big_snapshot_in_parts(monkeypatch):
    from twisted.internet.defer import succeed

    from devicehub.node import link as linkModule
    from devicehub.node.link import BrokerLink
    from devicehub.node.node import Node

    monkeypatch.setattr(linkModule, "SNAPSHOT_PART", 4)
    broker, clock, clients, nodes = make()

    class Local:
        def __init__(self, deliver, execute=None):
            self.deliver = deliver

        def send(self, message):
            broker.nodeMessage(b"n", message)

        def close(self, deliver=False):
            return succeed(None)

    node = Node("n", 5.0, clock, Metrics())

    class Device:
        def __init__(self, index):
            self.conn, self.since, self.protocol = index + 1, 0.0, "jsonl"

    node.devices = {imei: Device(index) for index, imei in enumerate(IMEIS[:10])}
    link = BrokerLink(node, "tcp://unused", clock, local=Local)
    link.startService()
    broker.registry.settle()
    assert broker.directory.page(20, 0) == sorted(IMEIS[:10])  # a hello with 4 rows, then 2 parts
    link.stopService()
    for call in clock.getDelayedCalls():
        call.cancel()


def test_a_million_device_snapshot_and_its_release_take_short_turns():
    """
    One node registers with a million devices, then is lost. Each reactor turn's work (one
    chunk, CPU time) stays far below 50 ms, and the broker answers between the turns. The
    collector is off while turns are timed: its pauses are the process's, not the chunks'
    (bench/scale.py measures the real broker, collector included).
    """
    count = 1_000_000
    clock = Clock()
    clients = Peers()
    broker = Broker(clock, clients, Peers(), BrokerSettings(warmup=0), Metrics())
    registry, directory = broker.registry, broker.directory
    rows = [[f"86{index:013d}", index, 0.0] for index in range(count)]
    turns: list[float] = []

    def work():
        while registry.busy:
            started = time.process_time()
            registry._step()
            turns.append(time.process_time() - started)
            if len(turns) % 500 == 0:  # a find between turns is answered, rightly
                assert ask(broker, clients, b"find", {"imei": "860000000000001"}).body["result"] in ("ok", "no")
        for call in clock.getDelayedCalls():
            call.cancel()

    gc.disable()
    try:
        started = time.process_time()
        broker.nodeMessage(b"big", Message(b"hello", b"", {"node": "big", "instance": "x", "devices": rows}))
        turns.append(time.process_time() - started)
        del rows
        work()
        assert len(directory) == count
        loaded = len(turns)
        started = time.process_time()
        registry.lost(registry.nodes[b"big"], "test")
        turns.append(time.process_time() - started)
        assert len(directory) == 0  # offline at once
        assert ask(broker, clients, b"find", {"imei": "860000000000001"}).body == {"result": "no"}
        work()
    finally:
        gc.enable()
    assert directory.releasing == 0 and sum(map(len, directory._shards)) == SHARDS
    ordered = sorted(turns)
    longest, median = ordered[-1], ordered[len(ordered) // 2]
    slowest = sorted(range(len(turns)), key=turns.__getitem__)[-3:]
    print(f"{loaded} turns to load, {len(turns) - loaded} to release; median {median * 1e3:.2f} ms, "
          f"longest {longest * 1e3:.2f} ms (turns {slowest})")
    assert longest < 0.05, (median, longest)


def test_a_snapshot_part_that_never_comes_is_asked_again_after_the_node_ttl():
    broker, clock, clients, nodes = make()
    rows = [[imei, index + 1, 0.0] for index, imei in enumerate(IMEIS[:6])]
    broker.nodeMessage(b"a", Message(b"hello", b"", {"node": "a", "instance": "a", "devices": rows[:3], "parts": 1}))
    broker.registry.settle()
    nodes.sent.clear()
    clock.advance(broker.registry.nodeTtl + 1)
    broker.nodeMessage(b"a", Message(b"ping", b"", {}))  # the node itself is alive
    broker.registry.expire()
    assert not broker.registry._loads  # no warm-up waits for it any more
    assert (b"a", Message(b"reset", b"", {})) in [(identity, message) for identity, message in nodes.sent]


def test_a_node_whose_snapshot_did_not_all_go_does_not_take_the_welcome(monkeypatch):
    import zmq
    from twisted.internet.defer import succeed

    from devicehub.node import link as linkModule
    from devicehub.node.link import BrokerLink
    from devicehub.node.node import Node

    monkeypatch.setattr(linkModule, "SNAPSHOT_PART", 2)
    clock, sent = Clock(), []

    class Full:
        def __init__(self, deliver, execute=None):
            pass

        def send(self, message):
            if message.kind == b"snapshot":
                raise zmq.Again()  # its queue is full
            sent.append(message.kind)

        def close(self, deliver=False):
            return succeed(None)

    node = Node("n", 5.0, clock, Metrics())

    class Device:
        conn, since, protocol = 1, 0.0, "jsonl"

    node.devices = {imei: Device() for imei in IMEIS[:5]}
    link = BrokerLink(node, "tcp://unused", clock, local=Full)
    link.startService()
    link.handle(Message(b"welcome", b"", {"heartbeat": 1.0}))
    assert sent == [b"hello"] and not link.registered  # it says hello again at its next try
    clock.advance(link.firstRetry)
    assert sent == [b"hello", b"hello"]
    link.stopService()
    for call in clock.getDelayedCalls():
        call.cancel()
