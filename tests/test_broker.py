"""The broker's routing and directory logic, with fake sockets and a task.Clock."""

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from devicehub.wire import frames
from devicehub.broker.broker import Broker
from devicehub.broker.directory import Directory, NodeRecord
from devicehub.broker.settings import BrokerSettings
from devicehub.common.metrics import Metrics


class Peers:
    """Records what the broker sends to one socket's peers."""

    def __init__(self):
        self.sent = []
        self.unreachable = set()

    def __call__(self, peer, message):
        if peer in self.unreachable:
            return False
        self.sent.append((peer, frames.decode(message.frames())))  # what a socket would carry
        return True

    def take(self, peer=None):
        taken = [(p, m) for p, m in self.sent if peer is None or p == peer]
        self.sent = [(p, m) for p, m in self.sent if not (peer is None or p == peer)]
        return [m for p, m in taken] if peer is not None else taken


def make(**kwargs):
    clock = Clock()
    clients, nodes = Peers(), Peers()
    store = kwargs.pop("store", None)
    broker = Broker(clock, clients, nodes, BrokerSettings(**{"warmup": 0, **kwargs}), Metrics(), store=store)
    return broker, clock, clients, nodes


def hello(broker, identity, name, devices=(), since=0.0, instance=None):
    """Register a node; C{devices} are (imei, conn) or (imei, conn, since)."""
    snapshot = [[*device, since][:3] for device in devices]
    body = {"node": name, "instance": instance or identity.decode(), "devices": snapshot}
    broker.fromNode([identity, *frames.encode(b"hello", b"", body)])


def online(broker, identity, imei, conn, since=0.0):
    broker.fromNode([identity, *frames.encode(b"online", b"", {"imei": imei, "conn": conn, "since": since})])


def request(broker, client, kind, rid, body):
    broker.fromClient([client, *frames.encode(kind, rid, body)])


def command(imei, timeout=5.0, wait=True):
    return {"imei": imei, "instruct": "0x10", "data": None, "timeout": timeout, "wait": wait}


def test_hello_registers_snapshot_and_welcomes():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("b", 1), ("a", 2)])
    [welcome] = nodes.take(b"N1")
    assert welcome.kind == b"welcome" and welcome.body["heartbeat"] > 0
    assert broker.directory.page(10, 0) == ["a", "b"]


def test_command_is_routed_to_the_owning_node_only():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("a", 1)])
    hello(broker, b"N2", "node-2", [("b", 1)])
    nodes.take()
    request(broker, b"C", b"send", b"r1", command("b"))
    [(peer, message)] = nodes.take()
    assert peer == b"N2" and message.kind == b"command" and message.body == command("b")
    broker.fromNode([b"N2", *frames.encode(b"result", message.rid, {"imei": "b", "result": "ok", "data": {"x": 1}})])
    [answer] = clients.take(b"C")
    assert answer.kind == b"reply" and answer.rid == b"r1"
    assert answer.body == {"result": "ok", "data": {"x": 1}}
    assert clock.getDelayedCalls() == []


def test_command_for_unknown_device_is_no():
    broker, clock, clients, nodes = make()
    request(broker, b"C", b"send", b"r1", command("ghost"))
    [answer] = clients.take(b"C")
    assert answer.body == {"result": "no"}


def test_node_that_does_not_answer_gives_timeout_after_grace():
    broker, clock, clients, nodes = make(grace=0.5)
    hello(broker, b"N1", "node-1", [("a", 1)])
    request(broker, b"C", b"send", b"r1", command("a", timeout=2))
    clock.advance(2.4)
    assert clients.take(b"C") == []
    clock.advance(0.2)
    [answer] = clients.take(b"C")
    assert answer.body == {"result": "timeout"}
    # a result arriving after that is dropped, not answered twice
    [routed] = [m for m in nodes.take(b"N1") if m.kind == b"command"]
    broker.fromNode([b"N1", *frames.encode(b"result", routed.rid, {"imei": "a", "result": "ok", "data": None})])
    assert clients.take() == []


def test_dead_node_resolves_inflight_and_leaves_directory():
    broker, clock, clients, nodes = make(nodeTtl=3.0)
    hello(broker, b"N1", "node-1", [("a", 1), ("b", 2)])
    hello(broker, b"N2", "node-2", [("c", 1)])
    request(broker, b"C", b"send", b"r1", command("a", timeout=60))
    for _ in range(8):  # node-2 keeps beating, node-1 is silent
        clock.advance(0.5)
        broker.fromNode([b"N2", *frames.encode(b"ping", b"", {})])
        broker.expireNodes()
    assert [m.body for m in clients.take(b"C")] == [{"result": "timeout"}]
    assert broker.directory.page(10, 0) == ["c"]
    assert list(n.name for n in broker.nodes.values()) == ["node-2"]
    assert clock.getDelayedCalls() == []


def test_unreachable_node_gives_no_and_is_removed():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("a", 1)])
    nodes.unreachable.add(b"N1")
    request(broker, b"C", b"send", b"r1", command("a"))
    assert [m.body for m in clients.take(b"C")] == [{"result": "no"}]
    assert len(broker.directory) == 0 and broker.nodes == {}


def test_login_on_another_node_drops_the_older_connection():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("a", 7)])
    hello(broker, b"N2", "node-2")
    nodes.take()
    online(broker, b"N2", "a", 3)
    assert [(m.kind, m.body) for m in nodes.take(b"N1")] == [(b"drop", {"imei": "a", "conn": 7})]
    # node-1's offline for the old connection must not remove node-2's device
    broker.fromNode([b"N1", *frames.encode(b"offline", b"", {"imei": "a", "conn": 7})])
    assert broker.directory.owner("a").node.name == "node-2"


def test_stale_offline_for_an_older_connection_is_ignored():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1")
    online(broker, b"N1", "a", 1)
    online(broker, b"N1", "a", 2)
    broker.fromNode([b"N1", *frames.encode(b"offline", b"", {"imei": "a", "conn": 1})])
    assert broker.directory.owner("a").conn == 2
    broker.fromNode([b"N1", *frames.encode(b"offline", b"", {"imei": "a", "conn": 2})])
    assert broker.directory.owner("a") is None


def test_unknown_node_is_asked_to_register_again():
    broker, clock, clients, nodes = make()
    online(broker, b"N9", "a", 1)
    assert [m.kind for m in nodes.take(b"N9")] == [b"reset"]
    assert len(broker.directory) == 0


def test_rehello_replaces_the_nodes_devices():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("a", 1), ("b", 1)])
    hello(broker, b"N1", "node-1", [("b", 1), ("c", 1)])
    assert broker.directory.page(10, 0) == ["b", "c"]


def test_bye_removes_node_at_once():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("a", 1)])
    broker.fromNode([b"N1", *frames.encode(b"bye", b"", {})])
    assert broker.nodes == {} and len(broker.directory) == 0


def test_leaving_node_still_delivers_results_of_commands_in_flight():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("a", 1)])
    request(broker, b"C", b"send", b"r1", command("a", timeout=30))
    [routed] = [m for m in nodes.take(b"N1") if m.kind == b"command"]
    broker.fromNode([b"N1", *frames.encode(b"bye", b"", {})])
    assert len(broker.directory) == 0
    request(broker, b"C", b"find", b"r2", {"imei": "a"})
    online(broker, b"N1", "b", 2)  # a leaving node takes no new devices
    assert len(broker.directory) == 0
    broker.fromNode([b"N1", *frames.encode(b"result", routed.rid, {"imei": "a", "result": "ok", "data": 5})])
    assert {m.rid: m.body for m in clients.take(b"C")} == {
        b"r2": {"result": "no"},
        b"r1": {"result": "ok", "data": 5},
    }
    assert broker.nodes == {}


def test_stale_claim_does_not_take_a_device_from_a_newer_login():
    broker, clock, clients, nodes = make()
    clock.advance(1000)
    hello(broker, b"N2", "node-2", [("a", 4, 200.0)])
    hello(broker, b"N1", "node-1", [("a", 9, 100.0)])  # e.g. after a broker restart
    assert broker.directory.owner("a").node.name == "node-2"
    drop, welcome = nodes.take(b"N1")
    assert (drop.kind, drop.body) == (b"drop", {"imei": "a", "conn": 9}) and welcome.kind == b"welcome"
    assert [m.kind for m in nodes.take(b"N2")] == [b"welcome"]


def test_draining_broker_refuses_new_requests_but_answers_routed_ones():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("a", 1)])
    request(broker, b"C", b"send", b"r1", command("a"))
    [routed] = [m for m in nodes.take(b"N1") if m.kind == b"command"]
    broker.draining = True
    request(broker, b"C", b"total", b"r2", {})
    broker.fromNode([b"N1", *frames.encode(b"result", routed.rid, {"imei": "a", "result": "ok", "data": None})])
    answers = {m.rid: (m.kind, m.body) for m in clients.take(b"C")}
    assert answers == {
        b"r2": (b"error", {"error": "broker shutting down", "code": "unavailable"}),
        b"r1": (b"reply", {"result": "ok", "data": None}),
    }


def test_queries():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [(f"d{i:02}", 1) for i in range(0, 10, 2)])
    hello(broker, b"N2", "node-2", [(f"d{i:02}", 1) for i in range(1, 10, 2)])
    request(broker, b"C", b"list", b"1", {"num": 3, "page": 1})
    request(broker, b"C", b"total", b"2", {})
    request(broker, b"C", b"find", b"3", {"imei": "d07"})
    request(broker, b"C", b"find", b"4", {"imei": "zz"})
    request(broker, b"C", b"health", b"5", {})
    answers = {m.rid: m.body for m in clients.take(b"C")}
    assert answers == {
        b"1": {"devices": ["d03", "d04", "d05"], "total": 10},
        b"2": {"total": 10},
        b"3": {"result": "ok"},
        b"4": {"result": "no"},
        b"5": {"nodes": 2, "total": 10, "store": "none"},
    }


def test_malformed_requests_get_an_error_and_nothing_else_changes():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("a", 1)])
    nodes.take()
    bad = [
        [b'DH3 send r1\n{"imei":"a"}'],
        [b"DH3 hello r3\n" + json.dumps({"node": "x", "devices": []}).encode()],
        [b'DH3 list r4\n{"num":-1,"page":0}'],
        [b"DH3 total r5\n[]"],
        [b"DH3 total r6\n{}", b"{}"],
    ]
    for message in bad:
        broker.fromClient([b"C", *message])
    answers = clients.take(b"C")
    assert [m.kind for m in answers] == [b"error"] * len(bad)
    assert [m.rid for m in answers] == [b"r1", b"r3", b"r4", b"r5", b"r6"]
    assert all(m.body["code"] == "invalid" for m in answers)
    # Another version's layout is unknown, so is its request id: dropped (and logged) unanswered.
    broker.fromClient([b"C", b"DH1", b"send", b"r2", b"{}"])
    broker.fromClient([b"C", b"DH2 send r2", b"{}"])
    broker.fromClient([b"C", b"just one frame"])
    assert clients.take() == [] and nodes.take() == []
    assert broker.directory.page(10, 0) == ["a"]


@given(st.lists(st.binary(max_size=30), max_size=6))
def test_any_frames_from_any_peer_are_survived(raw):
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("a", 1)])
    broker.fromClient([b"C", *raw])
    broker.fromNode([b"N1", *raw])
    broker.fromNode([b"N9", *raw])
    assert broker.directory.owner("a") is not None


def test_directory_pages_stay_sorted_through_changes():
    directory = Directory()
    one, two = NodeRecord(b"1", "one", 0), NodeRecord(b"2", "two", 0)
    for i, imei in enumerate(["m", "c", "x", "a", "q"]):
        directory.own(imei, one if i % 2 else two, 1, 0.0)
    directory.release("x", two)
    directory.own("c", two, 5, 1.0)
    directory.releaseAll(one)
    assert directory.page(10, 0) == ["c", "m", "q"]
    assert len(directory) == 3 and directory.page(2, 1) == ["q"]


class FakePipe:
    def __init__(self):
        self.sent = []
        self.close = lambda: None

    def send(self, message):
        self.sent.append(message)


class FakeBroker:
    """Stands for a BrokerService of the same process."""

    def __init__(self):
        self.pipe = FakePipe()

    def connectNode(self, deliver, execute=None):
        return self.pipe


@given(st.lists(st.lists(st.binary(max_size=30), max_size=5), max_size=5), st.sampled_from(sorted(frames.SCHEMAS)))
def test_node_link_survives_any_frames_from_its_broker(garbage, kind):
    from devicehub.node.link import BrokerLink
    from devicehub.node.node import Node

    clock = Clock()
    broker = FakeBroker()
    link = BrokerLink(Node("n", 5.0, clock, Metrics()), "tcp://unused", clock, local=broker.connectNode)
    link.startService()
    for raw in garbage + [[b"DH3 " + kind + b" 1\n{}"], [b"DH3 " + kind + b' 1\n{"imei":7}']]:
        link.connection.received(raw)
    link.connection.received(frames.encode(b"command", b"9", {"imei": "x", "instruct": "i", "data": None, "timeout": 1, "wait": True}))
    assert broker.pipe.sent[-1][:3] == (b"result", b"9", {"imei": "x", "result": "no", "data": None})
    for call in clock.getDelayedCalls():
        call.cancel()


def test_a_result_routed_by_a_previous_broker_run_answers_nobody():
    """Issue 12.1: a late ack of the old broker's command must not complete another device's."""
    old, clock, oldClients, oldNodes = make()
    hello(old, b"N1", "node-1", [("slow", 1), ("d2", 2)])
    request(old, b"C", b"send", b"r1", command("slow", timeout=30))
    [first] = [m for m in oldNodes.take(b"N1") if m.kind == b"command"]
    # the broker restarts (a new Broker, same node, same clock); the node registers again
    new, _, clients, nodes = make()
    new.clock = clock
    hello(new, b"N1", "node-1", [("slow", 1), ("d2", 2)])
    request(new, b"C", b"send", b"r2", command("d2", timeout=10))
    [second] = [m for m in nodes.take(b"N1") if m.kind == b"command"]
    assert second.rid != first.rid
    new.fromNode([b"N1", *frames.encode(b"result", first.rid, {"imei": "slow", "result": "ok", "data": "slow's"})])
    assert clients.take(b"C") == []
    assert second.rid in new.routed


def test_a_result_naming_another_device_is_dropped():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("a", 1), ("b", 2)])
    request(broker, b"C", b"send", b"r1", command("a", timeout=2))
    [routed] = [m for m in nodes.take(b"N1") if m.kind == b"command"]
    broker.fromNode([b"N1", *frames.encode(b"result", routed.rid, {"imei": "b", "result": "ok", "data": 1})])
    assert clients.take(b"C") == []
    clock.advance(3)
    [answer] = clients.take(b"C")
    assert answer.body == {"result": "timeout"}


def test_a_new_broker_answers_unavailable_not_no_until_nodes_have_reported():
    """Issue 12.2 / CONTRACT §6: a warming broker never says NO of a device it may not know yet."""
    broker, clock, clients, nodes = make(warmup=None, nodeTtl=3.0, grace=0.5)
    assert broker.warmUntil == 1.5  # one heartbeat (ttl / 3) plus the grace
    hello(broker, b"N1", "node-1", [("known", 1)])
    nodes.take()
    unavailable = (b"error", {"error": "broker starting: not every node has reported yet", "code": "unavailable"})
    asks = [
        (b"find", {"imei": "other"}), (b"send", command("other")),
        (b"send", {**command("other"), "queue": True}), (b"list", {"num": 5, "page": 0}),
        (b"total", {}), (b"health", {}),
    ]
    for n, (kind, body) in enumerate(asks):
        request(broker, b"C", kind, b"w%d" % n, body)
    assert [(m.kind, m.body) for m in clients.take(b"C")] == [unavailable] * len(asks)
    # what it does know, it answers
    request(broker, b"C", b"find", b"k1", {"imei": "known"})
    request(broker, b"C", b"send", b"k2", command("known"))
    assert [m.body for m in clients.take(b"C")] == [{"result": "ok"}]
    assert [m.kind for m in nodes.take(b"N1")] == [b"command"]
    clock.advance(1.5)
    for n, (kind, body) in enumerate(asks[:2]):
        request(broker, b"C", kind, b"a%d" % n, body)
    assert [m.body for m in clients.take(b"C")] == [{"result": "no"}, {"result": "no"}]


class FakeStore:
    """The command store's interface over a dict, answering at once."""

    healthy = True

    def __init__(self, commands):
        self.commands = {command["id"]: dict(command, state="queued") for command in commands}

    def mayHaveWaiting(self, imei):
        return any(c["imei"] == imei and c["state"] in ("queued", "sent") for c in self.commands.values())

    def due(self, imei, now):
        return succeed([dict(c) for c in self.commands.values() if c["imei"] == imei and c["state"] == "queued"])

    def sending(self, id, now):
        self.commands[id]["state"] = "sent"
        return succeed(None)

    def delivered(self, id, acked, now, final=False, reply=None):
        self.commands[id]["state"] = "acked" if acked else "failed" if final else "queued"
        return succeed(None)


def test_queued_delivery_follows_a_device_that_logged_in_again_meanwhile():
    """Issue 12.3: the new connection gets the command the old one never acked."""
    store = FakeStore([{"id": "q1", "imei": "a", "instruct": "0x10", "data": None}])
    broker, clock, clients, nodes = make(store=store)
    hello(broker, b"N1", "node-1", [("a", 1)])
    [first] = [m for m in nodes.take(b"N1") if m.kind == b"command"]
    online(broker, b"N1", "a", 2, since=1.0)  # logs in again while q1 waits for its ack
    assert [m.kind for m in nodes.take(b"N1")] == []  # one delivery at a time
    # the old connection closed: its command resolves as timeout on the node
    broker.fromNode([b"N1", *frames.encode(b"result", first.rid, {"imei": "a", "result": "timeout", "data": None})])
    [again] = [m for m in nodes.take(b"N1") if m.kind == b"command"]
    assert again.body["instruct"] == "0x10" and store.commands["q1"]["state"] == "sent"
    broker.fromNode([b"N1", *frames.encode(b"result", again.rid, {"imei": "a", "result": "ok", "data": None})])
    assert store.commands["q1"]["state"] == "acked"


def test_a_second_live_node_with_the_same_name_is_refused():
    """Issue 12.18: two processes with one --node-id must not take devices from each other."""
    broker, clock, clients, nodes = make(nodeTtl=3.0, grace=0.5)
    hello(broker, b"N1", "node-1", [("a", 1)], instance="first")
    hello(broker, b"N2", "node-1", [("a", 7)], instance="second")
    hello(broker, b"N2", "node-1", [("a", 7)], instance="second")
    assert [(m.kind, m.body) for m in nodes.take(b"N2")] == [
        (b"refused", {"error": "node id 'node-1' is in use by another live node"})] * 2
    assert broker.directory.owner("a").conn == 1 and list(broker.nodes) == [b"N1"]
    # the same process on a new connection (e.g. after a network blip) takes over at once
    hello(broker, b"N3", "node-1", [("a", 1)], instance="first")
    assert list(broker.nodes) == [b"N3"] and broker.directory.owner("a").node.identity == b"N3"
    # a node silent for more than a heartbeat and the grace is taken for dead (e.g. killed, restarted)
    clock.advance(1.6)
    hello(broker, b"N2", "node-1", [("a", 7)], instance="second")
    assert list(broker.nodes) == [b"N2"] and broker.directory.owner("a").conn == 7


def test_a_login_time_ahead_of_the_brokers_clock_is_taken_as_now():
    """Issue 12.19: a node whose clock runs fast does not win every ownership race."""
    broker, clock, clients, nodes = make()
    clock.advance(100)
    hello(broker, b"N1", "fast", [("a", 1, 10_000.0)])
    clock.advance(1)
    online(broker, b"N2", "b", 1)  # unknown node: told to register
    hello(broker, b"N2", "honest", [("a", 2, 100.5)])
    assert broker.directory.owner("a").node.name == "honest"
    clock.advance(1)
    online(broker, b"N1", "a", 3, since=10_000.0)
    assert broker.directory.owner("a")[:3] == (broker.nodes[b"N1"], 3, 102.0)


def test_a_command_the_devices_protocol_cannot_carry_is_rejected_as_invalid():
    broker, clock, clients, nodes = make()
    hello(broker, b"N1", "node-1", [("a", 1)])
    request(broker, b"C", b"send", b"r1", command("a"))
    [routed] = [m for m in nodes.take(b"N1") if m.kind == b"command"]
    body = {"imei": "a", "result": "rejected", "data": "gt06 commands carry no data"}
    broker.fromNode([b"N1", *frames.encode(b"result", routed.rid, body)])
    [answer] = clients.take(b"C")
    assert (answer.kind, answer.body) == (b"error", {"error": "gt06 commands carry no data", "code": "invalid"})


def test_a_queued_command_the_devices_protocol_cannot_carry_fails_and_the_next_goes_out():
    """Found by the protocol docs: it stayed queued, retried at every login, blocking those behind it."""
    store = FakeStore([{"id": "q1", "imei": "a", "instruct": "Relay,1#", "data": {"x": 1}},
                       {"id": "q2", "imei": "a", "instruct": "Relay,1#", "data": None}])
    broker, clock, clients, nodes = make(store=store)
    hello(broker, b"N1", "node-1", [("a", 1)])
    [first] = [m for m in nodes.take(b"N1") if m.kind == b"command"]
    body = {"imei": "a", "result": "rejected", "data": "gt06 commands carry no data"}
    broker.fromNode([b"N1", *frames.encode(b"result", first.rid, body)])
    assert store.commands["q1"]["state"] == "failed"
    [second] = [m for m in nodes.take(b"N1") if m.kind == b"command"]
    assert second.body["data"] is None and store.commands["q2"]["state"] == "sent"


# -- the fused path: a node of the broker's own process takes its commands as calls


class LocalNode:
    """Stands for a node of the broker's process: records each command's body, answers when told."""

    def __init__(self):
        self.executed: list[dict] = []
        self.pending: list = []
        self.answer = None  # a Reply to answer at once; None: answer later through pending
        self.stopped = False

    def __call__(self, body):
        from twisted.internet.defer import Deferred

        if self.stopped:
            return None
        self.executed.append(body)
        if self.answer is not None:
            return succeed(self.answer)
        done = Deferred()
        self.pending.append(done)
        return done


def makeLocal(**kwargs):
    """A broker whose node N1 (owning devices a and b) is of its own process."""
    local = LocalNode()
    broker, clock, clients, nodes = make(**kwargs)
    broker.routes.local[b"N1"] = local
    hello(broker, b"N1", "node-1", [("a", 1), ("b", 2)])
    nodes.take()
    return broker, clock, clients, nodes, local


def test_a_local_nodes_commands_are_calls_made_next_turn_together_and_their_replies_answered_next_turn():
    from devicehub.common.results import Reply

    broker, clock, clients, nodes, local = makeLocal()
    request(broker, b"C", b"send", b"r1", command("a"))
    request(broker, b"C", b"send", b"r2", command("b", wait=False))
    assert local.executed == [] and len(broker.routed) == 2  # routed, not yet executed
    clock.advance(0)
    assert local.executed == [command("a"), command("b", wait=False)] and nodes.take() == []  # no message
    local.pending[1].callback(Reply("ok"))
    local.pending[0].callback(Reply("ok", {"x": 1}))
    assert clients.take(b"C") == []  # not inside the node's call
    clock.advance(0)
    answers = clients.take(b"C")
    assert [(m.rid, m.body) for m in answers] == [(b"r2", {"result": "ok", "data": None}),
                                                  (b"r1", {"result": "ok", "data": {"x": 1}})]
    assert broker.routed == {} and broker.metrics.commands.results == {"ok": 2}


def test_a_local_nodes_reply_at_once_is_answered_after_the_request_with_the_results_own_meaning():
    from devicehub.common.results import BUSY, NO, REJECTED, Reply

    for reply, expected in [
        (Reply(NO), (b"reply", {"result": "no", "data": None})),
        (Reply(BUSY), (b"error", {"error": "the device has too many unanswered commands", "code": "busy"})),
        (Reply(REJECTED, "no such command"), (b"error", {"error": "no such command", "code": "invalid"})),
        (Reply("bogus"), (b"error", {"error": "invalid result from node", "code": "unavailable"})),
    ]:
        broker, clock, clients, nodes, local = makeLocal()
        local.answer = reply
        request(broker, b"C", b"send", b"r1", command("a"))
        assert clients.take(b"C") == [] and local.executed == []  # not inside the request's own handling
        clock.advance(0)  # a turn executes it, a later one answers (Clock runs both)
        [answer] = clients.take(b"C")
        assert (answer.kind, answer.body) == expected


def test_a_local_command_the_node_drops_or_fails_on_times_out_at_the_brokers_deadline_and_a_late_reply_is_dropped():
    from devicehub.common.results import Reply

    broker, clock, clients, nodes, local = makeLocal(grace=0.5)
    request(broker, b"C", b"send", b"late", command("a", timeout=2))
    clock.advance(0)
    local.stopped = True
    request(broker, b"C", b"send", b"dropped", command("b", timeout=2))
    clock.advance(0)
    clock.advance(2.5)
    answers = {m.rid: m.body for m in clients.take(b"C")}
    assert answers == {b"late": {"result": "timeout"}, b"dropped": {"result": "timeout"}}
    local.pending[0].callback(Reply("ok"))  # after the broker answered: nobody hears it
    clock.advance(0)
    assert clients.take(b"C") == [] and broker.routed == {}


def test_a_local_node_that_raises_is_logged_and_its_command_times_out(monkeypatch):
    from twisted.logger import Logger

    from devicehub.broker import routing

    logged: list[dict] = []
    monkeypatch.setattr(routing, "log", Logger(namespace="devicehub.broker.routing", observer=logged.append))
    broker, clock, clients, nodes, local = makeLocal(grace=0.5)
    broker.routes.local[b"N1"] = lambda body: 1 / 0
    request(broker, b"C", b"send", b"r1", command("a", timeout=1))
    request(broker, b"C", b"send", b"r2", command("b", timeout=1))
    clock.advance(0)
    assert [event["log_failure"].check(ZeroDivisionError) for event in logged] == [ZeroDivisionError] * 2
    clock.advance(1.5)
    assert [m.body for m in clients.take(b"C")] == [{"result": "timeout"}] * 2
