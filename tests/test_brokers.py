"""
Several brokers as separate twistd processes (CONTRACT §6, docs/cluster.md): two brokers
sharing one PostgreSQL queue, two nodes reporting to both, an api and a Demand given both
frontends; each broker is killed (-9) in turn under load.
"""

import json
import signal
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.web.client import Agent, HTTPConnectionPool

from devicehub import OK, BrokerUnavailable, Demand, Reply

from .support import Twistd, connect, eventually, free_ports, pause, start_twistd, until_online
from .test_pgstore import pgdatabase, postgres  # noqa: F401 (fixtures: a PostgreSQL server of the suite's own)

TTL = 1.0


class TwoBrokers:
    """Processes of a cluster with two brokers; C{frontends} and C{backends} name both."""

    def __init__(self, store: str) -> None:
        ports = free_ports(6)
        self.addresses = [[f"tcp://127.0.0.1:{port}" for port in ports[i:i + 3]] for i in (0, 3)]
        self.frontends = ",".join(frontend for frontend, _, _ in self.addresses)
        self.backends = ",".join(backend for _, backend, _ in self.addresses)
        self.common = ["--node-ttl", str(TTL), "--store", store]
        self.brokers: list[Twistd | None] = [None, None]
        self.others: list[Twistd] = []

    async def startBroker(self, index: int) -> Twistd:
        frontend, backend, events = self.addresses[index]
        broker = start_twistd(["--roles", "broker", "--frontend", frontend, "--backend", backend, "--events", events,
                               *self.common])
        self.brokers[index] = broker
        await eventually(lambda: "Broker warmed up" in broker.output or broker.ended.called, 20)
        assert not broker.ended.called, broker.output
        return broker

    async def startNode(self, name: str) -> tuple[Twistd, int]:
        port = free_ports(1)[0]
        node = start_twistd(["--roles", "node", "--node-id", name, "--devices", f"tcp:{port}:interface=127.0.0.1",
                             "--backend", self.backends, *self.common])
        self.others.append(node)
        await eventually(lambda: node.output.count("Registered with the broker") >= 2 or node.ended.called, 20)
        assert not node.ended.called, node.output
        return node, port

    async def startApi(self) -> str:
        port = free_ports(1)[0]
        api = start_twistd(["--roles", "api", "--http", f"tcp:{port}:interface=127.0.0.1",
                            "--frontend", self.frontends, "--events", self.addresses[0][2], *self.common])
        self.others.append(api)
        await eventually(lambda: "Listening for HTTP" in api.output or api.ended.called, 20)
        assert not api.ended.called, api.output
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for process in [*self.brokers, *self.others]:
            if process is not None:
                await process.stop(signal.SIGKILL)


@pytest_twisted.async_yield_fixture
async def brokers(pgdatabase):  # noqa: F811
    cluster = TwoBrokers(pgdatabase)
    yield cluster
    await cluster.stop()


class Load:
    """Commands kept in flight to the devices, each with its own number; every answer kept."""

    def __init__(self, demand: Demand, imeis: list[str], inflight: int = 20) -> None:
        self.demand = demand
        self.imeis = imeis
        self.inflight = inflight
        self.answers: dict[int, tuple[object, float, float]] = {}
        """Call number -> (its outcome, when it was made, how long its answer took)."""
        self.running = True
        self._next = 0

    async def _worker(self, lane: int) -> None:
        while self.running:
            self._next += 1
            number = self._next
            imei = self.imeis[number % len(self.imeis)]
            started = time.monotonic()
            try:
                outcome = await self.demand.request(imei, "count", {"n": number}, timeout=5)
            except BrokerUnavailable as e:
                outcome = e
            assert number not in self.answers  # exactly one answer per call
            self.answers[number] = (outcome, started, time.monotonic() - started)

    def start(self):
        self.done = gatherResults([ensure(self._worker(lane)) for lane in range(self.inflight)])

    async def stop(self) -> None:
        self.running = False
        await self.done


def ensure(coroutine):
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coroutine)


def echo(command: dict) -> dict:
    return command["data"]


@pytest.mark.alone  # bounds on how long callers wait: another test's load would move them
@pytest_twisted.ensureDeferred
async def test_killing_either_broker_under_load_loses_nothing_and_executes_nothing_twice(brokers):
    await brokers.startBroker(0)
    await brokers.startBroker(1)
    (_, port1), (_, port2) = [await brokers.startNode(name) for name in ("n1", "n2")]
    url = await brokers.startApi()
    demand = Demand(brokers.frontends, timeout=5)
    devices = [await connect(port1 if i % 2 else port2, f"dev-{i}", reply=echo, delay=0.05) for i in range(8)]
    imeis = [device.imei for device in devices]
    for imei in imeis:
        await until_online(demand, imei)
    queued = await demand.request("parcel", "deliver", {"box": 7}, queue=True)
    assert queued.result == "queued"
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def health():
        response = await http.get(url + "/health")
        return response.code, json.loads(await response.content())

    load = Load(demand, imeis)
    kills: list[float] = []
    try:
        while (await health())[1].get("brokers") != dict.fromkeys([brokers.addresses[0][0], brokers.addresses[1][0]], "ok"):
            await pause(0.1)  # the api has heard from both
        load.start()
        await pause(1.0)
        for index in (0, 1):
            kills.append(time.monotonic())
            await brokers.brokers[index].stop(signal.SIGKILL)
            await pause(3.0)
            code, body = await health()
            assert code == 200 and body["brokers"][brokers.addresses[index][0]] == "down", body
            assert body["brokers"][brokers.addresses[1 - index][0]] == "ok" and body["devices"] == 8
            await brokers.startBroker(index)  # back (warmed up) before the other one dies
            while (await demand.health())["brokers"][brokers.addresses[index][0]] != "ok":
                await pause(0.1)
        # frozen, not dead: its connections stay up, it just stops answering for 3 s
        frozen = time.monotonic()
        brokers.brokers[0].kill(signal.SIGSTOP)
        await pause(3.0)
        brokers.brokers[0].kill(signal.SIGCONT)  # it routes what it had taken meanwhile: repeats, for the nodes
        await pause(1.5)
        await load.stop()
    finally:
        load.running = False
        await pool.closeCachedConnections()

    answers = load.answers
    assert len(answers) > 100
    wrong = {number: outcome for number, (outcome, _, _) in answers.items() if outcome != Reply(OK, {"n": number})}
    assert wrong == {}  # every call answered ok with its own device's reply: no NO, no TIMEOUT, no unavailable
    executed = [command["data"]["n"] for device in devices for command in device.commands]
    assert len(executed) == len(set(executed))  # none twice, although callers moved to the other broker
    assert sorted(executed) == sorted(answers)
    # the calls in flight at a death, or made in the 3 s after it
    slowest = max(took for _, started, took in answers.values() if any(-took < started - kill < 3 for kill in kills))
    assert slowest < 1.0, slowest  # a dead broker's connections close: its calls move at once
    slowest = max(took for _, started, took in answers.values() if -took < started - frozen < 3)
    assert slowest < 2.5, slowest  # a frozen one is left after 1 s of silence
    assert not any(device.closed.called for device in devices)  # no device connection dropped
    # the queue lived through both deaths, and the command is delivered once
    parcel = await connect(port1, "parcel", reply="received")
    await eventually(lambda: parcel.commands, 10)
    while (await demand.status(queued.id))["state"] != "acked":
        await pause(0.1)
    assert [command["data"] for command in parcel.commands] == [{"box": 7}]
    demand.close()
    for device in devices + [parcel]:
        await device.close()
