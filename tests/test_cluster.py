"""
A cluster of separate twistd processes (broker, nodes, api) on loopback, with
processes killed and restarted under it.
"""

import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.web.client import Agent, HTTPConnectionPool

from devicehub import NO, OK, TIMEOUT, BrokerUnavailable, Demand, Reply

from .test_pgstore import pgdatabase, postgres  # noqa: F401 (fixtures: the suite's PostgreSQL server)
from .support import ROOT, Device, Twistd, connect, eventually, free_ports, pause, start_twistd, until_online

TTL = 1.0  # short, so that dead nodes are noticed quickly in tests


class Cluster:
    """Processes of one cluster; every option but the role's own is shared."""

    def __init__(self, ttl: float = TTL, drain: float = 5.0) -> None:
        frontend, backend, events = free_ports(3)
        self.frontend = f"tcp://127.0.0.1:{frontend}"
        self.backend = f"tcp://127.0.0.1:{backend}"
        self.events = f"tcp://127.0.0.1:{events}"
        self.common = ["--frontend", self.frontend, "--backend", self.backend, "--events", self.events,
                       "--node-ttl", str(ttl), "--drain-timeout", str(drain)]
        self.broker: Twistd | None = None
        self.nodes: dict[str, tuple[Twistd, int]] = {}
        self.apis: list[tuple[Twistd, int]] = []

    async def startBroker(self) -> Twistd:
        self.broker = start_twistd(["--roles", "broker", *self.common])
        await eventually(lambda: "Broker frontend on" in self.broker.output or self.broker.ended.called, 20)
        assert not self.broker.ended.called, self.broker.output
        return self.broker

    async def startNode(self, name: str, extra: list[str] = ()) -> int:
        """Start (or restart, on the same port) node C{name}; return its device port."""
        port = self.nodes[name][1] if name in self.nodes else free_ports(1)[0]
        process = start_twistd(
            ["--roles", "node", "--node-id", name, "--devices", f"tcp:{port}:interface=127.0.0.1", *extra, *self.common]
        )
        self.nodes[name] = (process, port)
        await eventually(lambda: "Registered with the broker" in process.output or process.ended.called, 20)
        assert not process.ended.called, process.output
        return port

    async def startApi(self) -> str:
        port = free_ports(1)[0]
        process = start_twistd(["--roles", "api", "--http", f"tcp:{port}:interface=127.0.0.1", *self.common])
        self.apis.append((process, port))
        await eventually(lambda: "Listening for HTTP" in process.output or process.ended.called, 20)
        assert not process.ended.called, process.output
        return f"http://127.0.0.1:{port}"

    def processes(self) -> list[Twistd]:
        found = [self.broker] if self.broker else []
        return found + [process for process, _ in self.nodes.values()] + [process for process, _ in self.apis]

    async def stop(self) -> None:
        for process in self.processes():
            await process.stop(signal.SIGKILL)


@pytest_twisted.async_yield_fixture
async def cluster():
    cluster = Cluster()
    yield cluster
    await cluster.stop()


@pytest.fixture
def demand(cluster):
    demand = Demand(cluster.frontend, timeout=5)
    yield demand
    demand.close()


async def listing(demand: Demand) -> list[str] | None:
    """The directory's devices, or None while the broker does not answer."""
    try:
        return await demand.getlist(1000, 0, timeout=0.5)
    except BrokerUnavailable:
        return None


async def settles(demand: Demand, expected, timeout: float = 10.0) -> None:
    """Wait until the directory lists exactly C{expected} (a callable giving the truth)."""
    deadline = reactor.seconds() + timeout
    while True:
        found = await listing(demand)
        if found == sorted(expected()):
            return
        assert reactor.seconds() < deadline, f"directory {found} != devices online {sorted(expected())}"
        await pause(0.05)


@pytest_twisted.ensureDeferred
async def test_commands_are_routed_across_nodes_and_pages_are_global(cluster, demand):
    await cluster.startBroker()
    ports = [await cluster.startNode(f"n{i}") for i in range(3)]
    devices = [
        await connect(ports[i % 3], f"dev{i:02}", reply=lambda c, i=i: {"node": f"n{i % 3}", "me": i})
        for i in range(12)
    ]
    await settles(demand, lambda: [f"dev{i:02}" for i in range(12)])
    for i in range(12):
        assert await demand.request(f"dev{i:02}", "0x10") == Reply(OK, {"node": f"n{i % 3}", "me": i})
    # each node got exactly the commands of its own devices: nothing was broadcast
    assert [len(device.commands) for device in devices] == [1] * 12
    assert await demand.getlist(5, 1) == [f"dev{i:02}" for i in range(5, 10)]
    assert await demand.health() == {"nodes": 3, "devices": 12, "store": "ok"}
    for device in devices:
        await device.close()


@pytest_twisted.ensureDeferred
async def test_killed_node_leaves_the_directory_and_its_commands_time_out(cluster, demand):
    await cluster.startBroker()
    doomed = await cluster.startNode("doomed")
    other = await cluster.startNode("other")
    silent = await connect(doomed, "on-doomed", silent=True)
    survivor = await connect(other, "on-other")
    await settles(demand, lambda: ["on-doomed", "on-other"])
    waiting = demand.send("on-doomed", "0x10", timeout=30)
    await eventually(lambda: silent.commands)
    started = reactor.seconds()
    cluster.nodes["doomed"][0].kill(signal.SIGKILL)
    assert await waiting == TIMEOUT  # resolved by the broker, not left hanging for 30 s
    assert reactor.seconds() - started < TTL + 1.5
    await silent.closed
    await settles(demand, lambda: ["on-other"], timeout=TTL + 1)
    assert await demand.send("on-doomed", "0x10") == NO
    await survivor.close()


@pytest_twisted.ensureDeferred
async def test_node_sigterm_leaves_at_once_drains_and_closes_politely(cluster, demand):
    await cluster.startBroker()
    port = await cluster.startNode("leaving")
    slow = await connect(port, "slow", reply="late but fine", delay=0.5)
    await settles(demand, lambda: ["slow"])
    inflight = demand.request("slow", "0x10")
    await eventually(lambda: slow.commands)
    goodbye = slow.nextLine()
    process = cluster.nodes["leaving"][0]
    started = reactor.seconds()
    process.kill(signal.SIGTERM)
    await settles(demand, lambda: [], timeout=0.5)  # gone from the directory well before the TTL
    assert reactor.seconds() - started < TTL
    assert await inflight == Reply(OK, "late but fine")  # the command in flight was drained
    assert await goodbye == {"type": "error", "error": "shutting down"}
    await slow.closed
    await process.ended
    assert process.signal == signal.SIGTERM and "Server Shut Down." in process.output


@pytest_twisted.ensureDeferred
async def test_broker_restart_is_survived_without_dropping_devices(cluster, demand):
    await cluster.startBroker()
    port = await cluster.startNode("n1")
    url = await cluster.startApi()
    device = await connect(port, "steady", reply="here")
    await settles(demand, lambda: ["steady"])
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def health():
        response = await http.get(url + "/health")
        return response.code, json.loads(await response.content())

    try:
        assert (await health())[0] == 200
        node = cluster.nodes["n1"][0]
        registrations = node.output.count("Registered with the broker")
        await cluster.broker.stop(signal.SIGKILL)
        with pytest.raises(BrokerUnavailable):
            await demand.send("steady", "0x10", timeout=0.5)
        code, body = await health()
        assert code == 503 and "broker" in body["error"]
        await cluster.startBroker()
        # the node notices, registers again with its devices; the same Demand and API reconnect
        await eventually(lambda: node.output.count("Registered with the broker") > registrations, 10)
        await settles(demand, lambda: ["steady"])
        assert await demand.request("steady", "0x10") == Reply(OK, "here")
        assert await health() == (200, {"status": "ok", "nodes": 1, "devices": 1, "store": "ok"})
        assert not device.closed.called  # the device never noticed
        await device.close()
    finally:
        await pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_device_moving_to_another_node_is_owned_by_the_newest_login(cluster, demand):
    await cluster.startBroker()
    one = await cluster.startNode("one")
    two = await cluster.startNode("two")
    old = await connect(one, "mover", reply="old")
    await settles(demand, lambda: ["mover"])
    replaced = old.nextLine()
    new = await connect(two, "mover", reply="new")
    assert await replaced == {"type": "error", "error": "replaced"}
    await old.closed
    assert await demand.request("mover", "0x10") == Reply(OK, "new")
    await new.close()


@pytest_twisted.ensureDeferred
async def test_simultaneous_logins_on_two_nodes_end_with_exactly_one_owner(cluster, demand):
    await cluster.startBroker()
    ports = [await cluster.startNode("one"), await cluster.startNode("two")]
    for round in range(5):
        imei = f"racer{round}"
        racers = [Device(imei, reply=f"node{i}") for i in range(2)]
        for racer, port in zip(racers, ports):  # both connect in the same reactor turn
            connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), racer)
        await eventually(lambda: sum(r.closed.called for r in racers) == 1)
        [winner] = [racer for racer in racers if not racer.closed.called]
        await settles(demand, lambda: [imei])
        await pause(TTL)  # a few heartbeats later it is still the one owner
        assert not winner.closed.called
        assert await demand.request(imei, "0x10") == Reply(OK, winner.reply)
        await winner.close()
        await settles(demand, lambda: [])


@pytest_twisted.ensureDeferred
async def test_directory_matches_the_live_nodes_through_random_failures(cluster, demand):
    """A seeded random schedule of logins, logouts, node deaths and broker restarts."""
    seed = int(os.environ.get("DEVICEHUB_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    await cluster.startBroker()
    names = ["a", "b", "c"]
    for name in names:
        await cluster.startNode(name)
    devices: list[Device] = []

    def online():
        return {device.imei for device in devices if device.loggedIn.called and not device.closed.called}

    history = []
    for step in range(20):
        action = rng.choices(
            ["login", "logout", "kill node", "stop node", "restart broker"], weights=[6, 1, 1, 1, 1]
        )[0]
        history.append(action)
        if action == "login":
            name = rng.choice(names)
            devices.append(await connect(cluster.nodes[name][1], f"imei{rng.randrange(12)}"))
        elif action == "logout" and online():
            victim = rng.choice([d for d in devices if not d.closed.called])
            await victim.close()
        elif action in ("kill node", "stop node"):
            name = rng.choice(names)
            process = cluster.nodes[name][0]
            await process.stop(signal.SIGKILL if action == "kill node" else signal.SIGTERM)
            await cluster.startNode(name)
        elif action == "restart broker":
            await cluster.broker.stop(signal.SIGKILL)
            await cluster.startBroker()
        await eventually(lambda: all(d.closed.called or d.imei in online() for d in devices))
        try:
            await settles(demand, online, timeout=TTL + 5)
        except AssertionError as e:
            raise AssertionError(f"seed {seed}, after {history}: {e}") from None
    for device in devices:
        if not device.closed.called:
            await device.close()


@pytest_twisted.ensureDeferred
async def test_frozen_node_is_declared_dead_then_taken_back(cluster, demand):
    """SIGSTOP: the node says nothing and closes nothing, as behind a network cut."""
    await cluster.startBroker()
    port = await cluster.startNode("frozen")
    device = await connect(port, "behind-cut", reply="back")
    await settles(demand, lambda: ["behind-cut"])
    node = cluster.nodes["frozen"][0]
    node.kill(signal.SIGSTOP)
    try:
        started = reactor.seconds()
        await settles(demand, lambda: [], timeout=TTL + 2)
        assert reactor.seconds() - started >= TTL * 0.5
        assert await demand.send("behind-cut", "0x10") == NO
    finally:
        node.kill(signal.SIGCONT)
    # the node speaks again, is told it is unknown, and registers again with its device
    await settles(demand, lambda: ["behind-cut"], timeout=5)
    assert await demand.request("behind-cut", "0x10") == Reply(OK, "back")
    await device.close()


@pytest_twisted.ensureDeferred
async def test_broker_sigterm_drains_commands_in_flight(cluster, demand):
    await cluster.startBroker()
    port = await cluster.startNode("n1")
    slow = await connect(port, "slow", reply="drained", delay=0.5)
    await settles(demand, lambda: ["slow"])
    inflight = demand.request("slow", "0x10")
    await eventually(lambda: slow.commands)
    cluster.broker.kill(signal.SIGTERM)
    await eventually(lambda: "Broker stopping" in cluster.broker.output)
    with pytest.raises(BrokerUnavailable):  # new requests are refused while it drains
        await demand.gettotal()
    assert await inflight == Reply(OK, "drained")
    await cluster.broker.ended
    assert "Server Shut Down." in cluster.broker.output
    assert not slow.closed.called  # devices stay with their node
    await slow.close()


@pytest_twisted.ensureDeferred
async def test_api_sigterm_finishes_requests_in_flight(cluster, demand):
    await cluster.startBroker()
    port = await cluster.startNode("n1")
    url = await cluster.startApi()
    slow = await connect(port, "slow", reply="answered", delay=0.5)
    await settles(demand, lambda: ["slow"])
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))
    try:
        pending = http.post(url + "/devices/slow/commands", data=b'{"instruct":"0x10"}')
        await eventually(lambda: slow.commands)
        api = cluster.apis[0][0]
        api.kill(signal.SIGTERM)
        response = await pending
        assert response.code == 200
        assert json.loads(await response.content()) == {"result": "ok", "reply": "answered"}
        await api.ended
        assert "Server Shut Down." in api.output
    finally:
        await pool.closeCachedConnections()
    await slow.close()


@pytest_twisted.ensureDeferred
async def test_example_cluster_script_runs_two_brokers_three_nodes_and_two_apis(tmp_path, pgdatabase):
    ports = free_ports(11)
    frontends, backends, events, nodes, apis = ports[0:2], ports[2:4], ports[4:6], ports[6:9], ports[9:11]
    script = Twistd()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "FRONTENDS": " ".join(map(str, frontends)),
        "BACKENDS": " ".join(map(str, backends)),
        "EVENTS": " ".join(map(str, events)),
        "NODE_PORTS": " ".join(map(str, nodes)),
        "API_PORTS": " ".join(map(str, apis)),
        "STORE": pgdatabase,  # the suite's server (without it the script starts a PostgreSQL of its own)
        "LOGS": str(tmp_path),  # else a directory of its own, kept for the user to read
    }
    reactor.spawnProcess(script, "/bin/bash", ["bash", str(ROOT / "examples" / "cluster.sh")], env=env, path=str(ROOT))
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def healthy(port):
        try:
            response = await http.get(f"http://127.0.0.1:{port}/health")
            body = json.loads(await response.content())
            return response.code == 200 and body["nodes"] == 3 and set(body["brokers"].values()) == {"ok"}
        except Exception:
            return False

    try:
        deadline = reactor.seconds() + 30
        while not (await healthy(apis[0]) and await healthy(apis[1])):
            assert reactor.seconds() < deadline and not script.ended.called, script.output
            await pause(0.2)
        device = await connect(nodes[1], "via-script", reply="ok")
        for frontend in frontends:  # each broker knows the device and reaches it
            demand = Demand(f"tcp://127.0.0.1:{frontend}")
            await until_online(demand, "via-script")  # the node tells the brokers after the login reply
            assert await demand.request("via-script", "0x10") == Reply(OK, "ok")
            demand.close()
        await device.close()
    finally:
        await pool.closeCachedConnections()
        await script.stop(signal.SIGTERM)
    assert "stopping 7 processes" in script.output
    assert script.exitCode is not None  # the script itself ended (after waiting for its children)


@pytest_twisted.ensureDeferred
async def test_queued_command_survives_broker_restart_and_node_death(cluster, demand, tmp_path):
    cluster.common += ["--store", str(tmp_path / "queue.sqlite3"), "--command-timeout", "1"]
    await cluster.startBroker()
    one = await cluster.startNode("one")
    two = await cluster.startNode("two")
    # until then it would answer unavailable, never queue for a device a node may hold (CONTRACT §6)
    await eventually(lambda: "Broker warmed up" in cluster.broker.output, 10)
    queued = await demand.request("parcel", "deliver", {"box": 7}, queue=True)
    assert queued.result == "queued"
    await cluster.broker.stop(signal.SIGKILL)
    await cluster.startBroker()  # same store file
    await eventually(lambda: cluster.nodes["one"][0].output.count("Registered with the broker") >= 2, 10)
    status = None
    while status is None:
        try:
            status = await demand.status(queued.id, timeout=0.5)
        except BrokerUnavailable:
            await pause(0.1)
    assert status["state"] == "queued"
    # delivered through node one, which dies before the device acks: queued again
    silent = await connect(one, "parcel", silent=True)
    await eventually(lambda: silent.commands)
    cluster.nodes["one"][0].kill(signal.SIGKILL)
    await silent.closed

    async def state():
        return (await demand.status(queued.id))["state"]

    while await state() != "queued":
        await pause(0.1)
    # at least once: sent again when the device comes back through node two
    device = await connect(two, "parcel", reply="received")
    await eventually(lambda: device.commands)
    while await state() != "acked":
        await pause(0.1)
    assert [c["data"] for c in silent.commands + device.commands] == [{"box": 7}, {"box": 7}]
    assert (await demand.status(queued.id))["attempts"] == 2
    await device.close()


async def outcome(call) -> str:
    """A call's result, or "unavailable" when it failed with BrokerUnavailable."""
    try:
        return await call
    except BrokerUnavailable:
        return "unavailable"


@pytest_twisted.ensureDeferred
async def test_broker_restart_gives_no_false_answers(cluster, demand):
    """
    Issue 12.1 and 12.2, as found from outside: after a kill -9 and restart of the broker,
    a late ack of a command the old broker routed completed another device's new command
    (ok, with the other device's reply), and calls made meanwhile were answered NO.
    """
    await cluster.startBroker()
    port = await cluster.startNode("n1")
    slow = await connect(port, "slow", silent=True)
    d2 = await connect(port, "d2", silent=True)
    await settles(demand, lambda: ["d2", "slow"])
    first = demand.request("slow", "first", timeout=30)
    first.addErrback(lambda failure: failure.trap(BrokerUnavailable))  # its broker dies: never answered
    await eventually(lambda: slow.commands)
    node = cluster.nodes["n1"][0]
    registrations = node.output.count("Registered with the broker")
    await cluster.broker.stop(signal.SIGKILL)
    during = [demand.find("slow", timeout=5), demand.send("slow", "x", timeout=1)]
    await cluster.startBroker()
    # made while no broker ran, answered by the new one: unavailable, or right, never NO
    assert await outcome(during[0]) in ("unavailable", OK)
    assert await outcome(during[1]) in ("unavailable", TIMEOUT)
    await eventually(lambda: node.output.count("Registered with the broker") > registrations, 10)
    await eventually(lambda: "Broker warmed up" in cluster.broker.output, 10)
    second = demand.request("d2", "second", timeout=2)
    await eventually(lambda: d2.commands)
    slow.send({"type": "ack", "ident": slow.commands[0]["ident"], "data": "slow's"})
    assert await second == Reply(TIMEOUT)
    assert not first.called
    assert not slow.closed.called and not d2.closed.called


@pytest_twisted.ensureDeferred
async def test_a_gt06_tracker_and_a_watch_on_two_nodes_behind_one_broker(cluster, demand):
    """Issue 13: devices of different protocols, on nodes in processes of their own."""
    from twisted.internet.endpoints import connectProtocol

    from devicehub.devices.simulate import model
    from devicehub.devices.simulate.fleet import SimulatedDevice, Tally

    await cluster.startBroker()
    ports = {}
    for name, protocol in (("trackers", "gt06"), ("watches", "watch")):
        ports[protocol] = free_ports(1)[0]
        await cluster.startNode(name, ["--listen", f"{protocol}=tcp:{ports[protocol]}:interface=127.0.0.1"])
    devices = {}
    for protocol, imei in (("gt06", "868120145233604"), ("watch", "8800000015")):
        devices[protocol] = SimulatedDevice(model(protocol)(imei), 0, reactor, Tally())
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", ports[protocol]), devices[protocol])
    await settles(demand, lambda: ["8800000015", "868120145233604"])
    assert await demand.request("868120145233604", "Relay,1#") == Reply(OK, devices["gt06"].device.answerTo("Relay,1#"))
    assert await demand.request("8800000015", "CR") == Reply(OK, [])
    for device in devices.values():
        device.transport.loseConnection()
        await device.closed
