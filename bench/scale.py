"""
devicehub's broker at internet scale: `python bench/scale.py [--quick] [--out bench/results-scale.json] [--chart docs/performance/scale.png]`.

A real broker process (`twistd -n devicehub --roles broker`) and simulated nodes: one
process (`bench/scale.py nodes ...`, plain pyzmq) holding --nodes DEALER sockets that
speak the real backend protocol (hello with a snapshot, online/offline, ping, result ok
for every command at once; devicehub/wire/frames.py) — no TCP devices. The run fills the
directory to each level of --levels devices online over the nodes and measures, at each:

  - broker RSS, and RSS per online device;
  - logins/s and logouts/s: a batch of `online` (then `offline`) notices over every node,
    timed from the first sent to the last node's `pong` (the broker answers a node's
    messages in order, so the pong follows the last one handled);
  - routed commands/s: one Demand in this process keeping a window of sends in flight to
    random online devices, every one answered `ok` by its simulated node;

then, at the top level: a `find` sent every few ms by another Demand while a node's
devices are released (`bye`) and loaded again (`hello`), and while an extra node loads and
releases a big snapshot (the broker's answer latency is its reactor's responsiveness);
and last the broker is killed (-9) and started again: the time until every node is
registered again (`welcome` after its snapshot) and until `total` answers every device.
"""

import argparse
import json
import os
import random
import select
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SNAPSHOT_PART = 5000  # devicehub.node.link.SNAPSHOT_PART
HEARTBEAT = 5.0 / 3  # the broker's default node TTL / 3, until a welcome says otherwise
FIRST_RETRY = 0.05


# -- the simulated nodes (a process of their own; plain pyzmq, no reactor)


def _header(kind: bytes, rid: bytes = b"") -> bytes:
    return b"DH3 " + kind + b" " + rid + b"\n"  # docs/frames.md: then the JSON, in the same frame


class SimNode:
    """One simulated node: a DEALER to the broker's backend and the devices it holds."""

    def __init__(self, context, backend: str, name: str, zmq) -> None:
        self.zmq = zmq
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 200_000)
        self.socket.setsockopt(zmq.RCVHWM, 200_000)
        self.socket.connect(backend)
        self.name, self.instance = name, uuid.uuid4().hex
        self.devices: dict[str, int] = {}  # imei -> conn
        self.since = time.time()
        self.conn = 0
        self.registered = False
        self.heartbeat = HEARTBEAT
        self.retry = FIRST_RETRY
        self.nextTick = 0.0
        self.welcomes = 0
        self.welcomedAt = 0.0
        self.pongs = 0
        self.commands = 0
        self.leaving = False

    def send(self, kind: bytes, body: bytes, rid: bytes = b"", block: bool = False) -> bool:
        try:
            self.socket.send(_header(kind, rid) + body, 0 if block else self.zmq.NOBLOCK)
            return True
        except self.zmq.Again:
            self.registered = False  # not connected: say hello again, as a real node does
            return False

    def hello(self) -> None:
        """The snapshot, in parts of SNAPSHOT_PART rows as devicehub's nodes send it (devicehub/node/link.py)."""
        snapshot = [[imei, conn, self.since, "jsonl"] for imei, conn in self.devices.items()]
        parts = [snapshot[start:start + SNAPSHOT_PART] for start in range(SNAPSHOT_PART, len(snapshot), SNAPSHOT_PART)]
        body = {"node": self.name, "instance": self.instance, "devices": snapshot[:SNAPSHOT_PART]}
        if parts:
            body["parts"] = len(parts)
        if self.send(b"hello", json.dumps(body).encode(), block=self.registered):
            for number, part in enumerate(parts, 1):
                self.send(b"snapshot", json.dumps({"devices": part, "part": number}).encode(), block=True)

    def tick(self, now: float) -> None:
        if now < self.nextTick or self.leaving:
            return
        if self.registered:
            self.send(b"ping", b"{}")
            self.nextTick = now + self.heartbeat
        else:
            self.hello()
            self.nextTick = now + self.retry
            self.retry = min(self.retry * 2, self.heartbeat)

    def login(self, imei: str) -> None:
        self.conn += 1
        self.devices[imei] = self.conn
        body = b'{"imei":"%s","conn":%d,"since":%r,"protocol":"jsonl"}' % (imei.encode(), self.conn, self.since)
        self.send(b"online", body, block=True)

    def logout(self, imei: str) -> None:
        conn = self.devices.pop(imei)
        self.send(b"offline", b'{"imei":"%s","conn":%d,"reason":"closed"}' % (imei.encode(), conn), block=True)

    def receive(self) -> None:
        zmq = self.zmq
        while True:
            try:
                header, _, body = self.socket.recv(zmq.NOBLOCK).partition(b"\n")
            except zmq.Again:
                return
            _, kind, rid = header.split(b" ", 2)
            if kind == b"command":
                imei = json.loads(body)["imei"]
                self.commands += 1
                self.send(b"result", b'{"imei":"%s","result":"ok","data":null}' % imei.encode(), rid, block=True)
            elif kind == b"pong":
                self.pongs += 1
            elif kind == b"welcome":
                self.registered, self.retry = True, FIRST_RETRY
                self.heartbeat = json.loads(body)["heartbeat"]
                self.nextTick = time.monotonic() + self.heartbeat
                self.welcomes += 1
                self.welcomedAt = time.time()
            elif kind == b"reset" and not self.leaving:
                self.registered, self.retry, self.nextTick = False, FIRST_RETRY, 0.0
            elif kind == b"drop":
                message = json.loads(body)
                if self.devices.get(message["imei"]) == message["conn"]:
                    del self.devices[message["imei"]]
            elif kind == b"refused":
                print(json.dumps({"error": f"{self.name} refused: {body.decode()}"}), flush=True)


class Fleet:
    """The simulated nodes and the operations the orchestrator asks for on stdin (one JSON per line)."""

    def __init__(self, backend: str, count: int) -> None:
        import zmq

        self.zmq = zmq
        self.context = zmq.Context()
        self.backend = backend
        self.nodes = [SimNode(self.context, backend, f"sim-{index:03d}", zmq) for index in range(count)]
        self.serial = 0
        self.batch: list[tuple[SimNode, str]] = []
        self.extra: SimNode | None = None
        self.retired: list[SimNode] = []

    def imei(self) -> str:
        self.serial += 1
        return f"86{self.serial:013d}"

    def every(self) -> list[SimNode]:
        return self.nodes + ([self.extra] if self.extra is not None else [])

    def service(self, timeout: float = 0.0) -> None:
        """Read what came in on every node and send what is due."""
        poller = self.zmq.Poller()
        for node in self.every():
            poller.register(node.socket, self.zmq.POLLIN)
        poller.poll(timeout * 1000)
        now = time.monotonic()
        for node in self.every():
            node.receive()
            node.tick(now)

    def wait(self, done, timeout: float = 600.0):
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for the broker")
            yield 0.001

    def barrier(self, nodes: list[SimNode]):
        """Every earlier message of C{nodes} has been handled once each one's ping is answered."""
        expected = {node: node.pongs + 1 for node in nodes}
        for node in nodes:
            node.send(b"ping", b"{}", block=True)
        yield from self.wait(lambda: all(node.pongs >= count for node, count in expected.items()))

    def op_register(self, perNode: int):
        """Every node says hello with C{perNode} devices; done when each has its welcome."""
        started = time.perf_counter()
        for node in self.nodes:
            while len(node.devices) < perNode:
                node.conn += 1
                node.devices[self.imei()] = node.conn
            node.registered, node.nextTick, node.retry = False, 0.0, FIRST_RETRY
            node.welcomes = 0
        yield from self.wait(lambda: all(node.welcomes for node in self.nodes))
        seconds = time.perf_counter() - started
        return {"registered": len(self.nodes), "devices": sum(len(node.devices) for node in self.nodes),
                "seconds": round(seconds, 3)}

    def op_login(self, count: int):
        started = time.perf_counter()
        self.batch = []
        for index in range(count):
            node = self.nodes[index % len(self.nodes)]
            imei = self.imei()
            node.login(imei)
            self.batch.append((node, imei))
            if index % 2000 == 1999:
                yield 0
        yield from self.barrier(self.nodes)
        seconds = time.perf_counter() - started
        return {"logins": count, "seconds": round(seconds, 4), "per_s": round(count / seconds)}

    def op_logout(self):
        started = time.perf_counter()
        for index, (node, imei) in enumerate(self.batch):
            node.logout(imei)
            if index % 2000 == 1999:
                yield 0
        yield from self.barrier(self.nodes)
        seconds = time.perf_counter() - started
        count, self.batch = len(self.batch), []
        return {"logouts": count, "seconds": round(seconds, 4), "per_s": round(count / seconds)}

    def op_imeis(self, count: int):
        """Up to C{count} online imeis, spread over the nodes (for the Demand's commands)."""
        every = [imei for node in self.nodes for imei in node.devices]
        yield 0
        return {"imeis": random.Random(1).sample(every, min(count, len(every)))}

    def op_leave(self, index: int):
        """Node C{index} leaves: its devices leave the directory (the orchestrator waits for the total)."""
        node = self.nodes[index]
        node.leaving = True
        node.send(b"bye", b"{}", block=True)
        yield 0
        return {"left": node.name, "devices": len(node.devices), "bye_at": time.time()}

    def op_rejoin(self, index: int):
        """Node C{index} registers again with its devices; done at its welcome (sent before the snapshot is loaded)."""
        node = self.nodes[index]
        node.leaving, node.registered, node.nextTick, node.retry = False, False, 0.0, FIRST_RETRY
        welcomes, helloAt = node.welcomes, time.time()
        yield from self.wait(lambda: node.welcomes > welcomes)
        return {"rejoined": node.name, "devices": len(node.devices), "hello_at": helloAt, "welcome_at": node.welcomedAt}

    def op_bigjoin(self, count: int):
        """An extra node registers with a snapshot of C{count} devices."""
        node = self.extra = SimNode(self.context, self.backend, "sim-big", self.zmq)
        for _ in range(count):
            node.conn += 1
            node.devices[self.imei()] = node.conn
        yield from self.wait(lambda: node.socket.getsockopt(self.zmq.EVENTS) & self.zmq.POLLOUT)
        helloAt = time.time()
        node.nextTick = 0.0
        yield from self.wait(lambda: node.welcomes > 0)
        return {"bigjoined": count, "hello_at": helloAt, "welcome_at": node.welcomedAt}

    def op_bigleave(self):
        """The extra node leaves."""
        node = self.extra
        node.leaving = True
        node.send(b"bye", b"{}", block=True)
        byeAt = time.time()
        self.extra = None
        self.retired.append(node)  # its socket stays open (closing it now could drop the bye)
        yield 0
        return {"bigleft": len(node.devices), "bye_at": byeAt}

    def op_reregistered(self, after: float):
        """Done when every node has been welcomed after wall-clock time C{after} (a restarted broker)."""
        yield from self.wait(lambda: all(node.welcomedAt > after for node in self.nodes), 300)
        return {"reregistered": len(self.nodes), "last_welcome_at": max(node.welcomedAt for node in self.nodes),
                "first_welcome_at": min(node.welcomedAt for node in self.nodes)}

    def run(self) -> None:
        """Serve the nodes; run one operation at a time, as stdin asks; print each one's figures."""
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        pending = b""
        operation, resumeAt = None, 0.0
        while True:
            self.service(0 if operation is not None else 0.01)
            if operation is None and select.select([stdin], [], [], 0)[0]:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    return
                pending += chunk
                if b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    request = json.loads(line)
                    operation = getattr(self, "op_" + request.pop("op"))(**request)
                    resumeAt = 0.0
            if operation is not None and time.monotonic() >= resumeAt:
                try:
                    delay = next(operation)
                    resumeAt = time.monotonic() + (delay or 0)
                except StopIteration as done:
                    operation = None
                    print(json.dumps(done.value), flush=True)
                except Exception as e:  # reported to the orchestrator, which stops the run
                    operation = None
                    print(json.dumps({"error": repr(e)}), flush=True)


def nodesMain(argv: list[str]) -> None:
    import gc

    # A load generator holding a million devices: its collector's full scans (hundreds of
    # ms each, as it grows) would be pauses of the load, not of the broker.
    gc.disable()
    parser = argparse.ArgumentParser(description="simulated nodes for bench/scale.py")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--nodes", type=int, default=100)
    options = parser.parse_args(argv)
    Fleet(options.backend, options.nodes).run()


# -- the orchestrator (Twisted, as bench/run.py)


async def main(reactor, options) -> dict:
    from twisted.internet import defer, task

    from devicehub import Demand
    from devicehub.common.errors import BrokerUnavailable
    from devicehub.tap import tune_garbage_collector
    from run import TWISTD, Bench, machine, percentiles, progress
    from tests.support import free_ports

    tune_garbage_collector()
    bench = Bench(reactor, options)
    results: dict = {"machine": machine(), "command": " ".join(["python", "bench/scale.py", *sys.argv[1:]]),
                     "options": {key: value for key, value in vars(options).items() if key not in ("out", "chart")},
                     "load_average_at_start": os.getloadavg()}
    frontend, backend, events = (f"tcp://127.0.0.1:{port}" for port in free_ports(3))
    store = os.path.join(bench.tmp, "scale.sqlite3")
    brokerArgs = [TWISTD, "-n", "--pidfile=", "-l", "-", "devicehub", "--roles", "broker", "--store", store,
                  "--frontend", frontend, "--backend", backend, "--events", events]

    def sleep(seconds: float):
        return task.deferLater(reactor, seconds, lambda: None)

    async def ask(fleet, key: str, timeout: float = 600, **request) -> dict:
        fleet.transport.write(json.dumps(request).encode() + b"\n")
        return await answered(fleet, key, timeout)

    async def answered(process, key: str, timeout: float) -> dict:
        """As run.reported, but only from whole lines (a long one comes in several reads)."""
        taken = getattr(process, "taken", 0)
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in process.output.rpartition("\n")[0].splitlines() if line.startswith("{")]
            for index, line in enumerate(lines[taken:], taken):
                figures = json.loads(line)
                if "error" in figures:
                    raise RuntimeError(f"the fleet failed: {figures['error']}")
                if key in figures:
                    process.taken = index + 1
                    return figures
            if process.ended.called or time.monotonic() > deadline:
                raise RuntimeError(f"never saw {key!r}:\n{process.output[-2000:]}")
            await sleep(0.02)

    async def totalReaches(count: int, timeout: float = 600) -> float:
        """Poll C{total} until it is C{count} (unavailable while warming up); the wall-clock time it was."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await demand.gettotal(timeout=5) == count:
                    return time.time()
            except BrokerUnavailable:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the total never reached {count}")
            await sleep(0.01)

    try:
        progress("starting the broker")
        broker = bench.spawn(brokerArgs)
        await broker.until("Broker warmed up", 60)
        fleet = bench.spawn([sys.executable, str(Path(__file__).resolve()), "nodes", "--backend", backend,
                             "--nodes", str(options.nodes)])
        demand = Demand(frontend, timeout=10)
        probe = Demand(frontend, timeout=10)
        await sleep(0.5)
        baseRss = broker.rss_kib()
        await ask(fleet, "registered", op="register", perNode=0)
        progress(f"{options.nodes} simulated nodes registered")
        results["broker_rss_kib_empty"] = baseRss
        levels = []
        for level in options.levels:
            progress(f"filling the directory to {level} devices (snapshots)")
            started = time.time()
            filled = await ask(fleet, "registered", op="register", perNode=level // options.nodes)
            # A welcome comes before the snapshot is loaded: the total says when it is.
            loadedAt = await totalReaches(filled["devices"])
            online = await demand.gettotal()
            assert online == filled["devices"], (online, filled)
            filled["seconds"] = round(loadedAt - started, 3)
            await sleep(0.5)
            rss = broker.rss_kib()
            point = {"online": online, "load_average": os.getloadavg()[0],
                     "fill_by_snapshots_s": filled["seconds"], "broker_rss_kib": rss,
                     "broker_rss_bytes_per_device": round((rss - baseRss) * 1024 / online)}
            logins, logouts = [], []
            for _ in range(options.repeats):
                cpu = broker.cpu_seconds()
                logins.append(await ask(fleet, "logins", op="login", count=options.batch))
                logins[-1]["broker_cpu_us"] = round((broker.cpu_seconds() - cpu) * 1e6 / options.batch, 1)
                cpu = broker.cpu_seconds()
                logouts.append(await ask(fleet, "logouts", op="logout"))
                logouts[-1]["broker_cpu_us"] = round((broker.cpu_seconds() - cpu) * 1e6 / options.batch, 1)
            point["logins_per_s"] = statistics.median(run["per_s"] for run in logins)
            point["logouts_per_s"] = statistics.median(run["per_s"] for run in logouts)
            point["runs_logins_per_s"] = [run["per_s"] for run in logins]
            point["runs_logouts_per_s"] = [run["per_s"] for run in logouts]
            point["broker_cpu_us_per_login"] = statistics.median(run["broker_cpu_us"] for run in logins)
            point["broker_cpu_us_per_logout"] = statistics.median(run["broker_cpu_us"] for run in logouts)
            point["runs_broker_cpu_us_per_login"] = [run["broker_cpu_us"] for run in logins]
            assert await demand.gettotal() == online
            imeis = (await ask(fleet, "imeis", op="imeis", count=10_000))["imeis"]
            runs = []
            for _ in range(options.repeats):
                cpu = broker.cpu_seconds()
                runs.append(await bench.windowed(
                    lambda i: demand.send(imeis[(i * 7919) % len(imeis)], "0x10", i), options.commands, options.window))
                runs[-1]["broker_cpu_us_per_command"] = round((broker.cpu_seconds() - cpu) * 1e6 / options.commands, 1)
            runs.sort(key=lambda run: run["per_s"])
            point["commands"] = {**runs[len(runs) // 2], "window": options.window,
                                 "runs_per_s": [run["per_s"] for run in runs]}
            assert all(run["acked"] == run["sent"] for run in runs), runs
            progress(f"{online} online: {point['logins_per_s']} logins/s, {point['commands']['per_s']} commands/s, "
                     f"{point['broker_rss_bytes_per_device']} B/device (load {point['load_average']:.2f})")
            levels.append(point)
        results["levels"] = levels

        # Responsiveness: a find every few ms while big directory changes are handled.
        samples: list[tuple[float, float]] = []  # (wall-clock time sent, seconds to the answer)
        probing = [True]
        someone = imeis[0]

        async def probeLoop() -> None:
            while probing[0]:
                sent, started = time.time(), time.perf_counter()
                await probe.find(someone)
                samples.append((sent, time.perf_counter() - started))
                await sleep(0.002)

        def window(start: float, end: float) -> dict:
            inside = [(latency, sent) for sent, latency in samples if start <= sent <= end]
            # A find sent just before the window and answered inside it was blocked too.
            inside += [(latency, sent) for sent, latency in samples if sent < start < sent + latency]
            if not inside:
                return {"finds": 0}
            worst = max(inside)
            return {"finds": len(inside), **percentiles([latency for latency, _ in inside]),
                    "worst_sent_after_s": round(worst[1] - start, 3)}

        running = defer.ensureDeferred(probeLoop())
        await sleep(1.0)
        quiet = window(time.time() - 1.0, time.time())
        events = {"quiet": quiet}
        top = levels[-1]["online"]
        left = await ask(fleet, "left", op="leave", index=0)
        releasedAt = await totalReaches(top - left["devices"])
        await sleep(1.0)  # offline at once; the broker removes them from its structures meanwhile
        events["release_node"] = {"devices": left["devices"], "offline_after_s": round(releasedAt - left["bye_at"], 3),
                                  **window(left["bye_at"], left["bye_at"] + 1.0)}
        back = await ask(fleet, "rejoined", op="rejoin", index=0)
        loadedAt = await totalReaches(top)
        await sleep(0.3)
        events["snapshot_node"] = {"devices": back["devices"], "load_s": round(loadedAt - back["hello_at"], 3),
                                   "welcome_after_s": round(back["welcome_at"] - back["hello_at"], 3),
                                   **window(back["hello_at"], loadedAt + 0.05)}
        big = await ask(fleet, "bigjoined", op="bigjoin", count=options.big)
        loadedAt = await totalReaches(top + options.big)
        await sleep(0.3)
        events["snapshot_big"] = {"devices": options.big, "load_s": round(loadedAt - big["hello_at"], 3),
                                  "welcome_after_s": round(big["welcome_at"] - big["hello_at"], 3),
                                  **window(big["hello_at"], loadedAt + 0.05)}
        gone = await ask(fleet, "bigleft", op="bigleave")
        releasedAt = await totalReaches(top)
        await sleep(1.5)
        events["release_big"] = {"devices": options.big, "offline_after_s": round(releasedAt - gone["bye_at"], 3),
                                 **window(gone["bye_at"], gone["bye_at"] + 1.5)}
        probing[0] = False
        await running
        assert await demand.gettotal() == levels[-1]["online"]
        for name, figures in events.items():
            progress(f"find latency, {name}: {figures}")
        results["responsiveness"] = {**events, "load_average": os.getloadavg()[0]}

        # Restart: kill -9 and start again on the same addresses and store.
        progress("killing the broker (-9) and starting it again")
        first_broker_output = broker.output
        broker.transport.signalProcess("KILL")
        await broker.ended
        bench.processes.remove(broker)
        restartedAt = time.time()
        broker = bench.spawn(brokerArgs)
        back = await ask(fleet, "reregistered", 300, op="reregistered", after=restartedAt)
        while True:
            try:
                total = await demand.gettotal(timeout=2)
                if total == levels[-1]["online"]:
                    break
            except BrokerUnavailable:
                pass
            await sleep(0.02)
        answeredAt = time.time()
        bound = next((line for line in broker.output.splitlines() if "Broker frontend on" in line), None)
        if os.environ.get("SCALE_DEBUG"):  # the broker's log, both runs, on stderr
            print(first_broker_output + broker.output, file=sys.stderr)
        results["restart"] = {
            "devices": levels[-1]["online"],
            "all_nodes_registered_s": round(back["last_welcome_at"] - restartedAt, 3),
            "first_node_registered_s": round(back["first_welcome_at"] - restartedAt, 3),
            "total_answers_every_device_s": round(answeredAt - restartedAt, 3),
            "broker_rss_kib": broker.rss_kib(), "bound": bound is not None, "load_average": os.getloadavg()[0],
        }
        progress(f"restart: {results['restart']}")
        demand.close()
        probe.close()
    finally:
        await bench.stopAll()

    first, last = results["levels"][0], results["levels"][-1]
    worst = max(results["responsiveness"][name].get("max_ms", 0) for name in
                ("release_node", "snapshot_node", "snapshot_big", "release_big"))
    results["targets"] = {
        "logins_top_vs_first": round(last["logins_per_s"] / first["logins_per_s"], 3),
        "commands_top_vs_first": round(last["commands"]["per_s"] / first["commands"]["per_s"], 3),
        "logins_within_20_percent": last["logins_per_s"] >= 0.8 * first["logins_per_s"],
        "commands_within_20_percent": last["commands"]["per_s"] >= 0.8 * first["commands"]["per_s"],
        "worst_find_ms_during_changes": worst,
        "reactor_never_blocked_over_50_ms": worst <= 50,
    }
    results["load_average_at_end"] = os.getloadavg()
    return results


def draw(results: dict, path: Path) -> Path:
    """The scale chart: logins/s and commands/s against devices online, RSS per device, find latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = results["levels"]
    online = [point["online"] for point in levels]
    figure, (rates, cpu, memory, latency) = plt.subplots(1, 4, figsize=(18, 4))
    rates.plot(online, [point["logins_per_s"] for point in levels], marker="o", label="logins/s")
    rates.plot(online, [point["logouts_per_s"] for point in levels], marker="s", label="logouts/s")
    rates.plot(online, [point["commands"]["per_s"] for point in levels], marker="^", label="routed commands/s")
    rates.set_xscale("log")
    rates.set_ylim(bottom=0)
    rates.set(xlabel="devices online (log scale)", ylabel="per second", title="Broker rates against directory size")
    rates.legend(fontsize=8)
    if all("broker_cpu_us_per_login" in point for point in levels):
        cpu.plot(online, [point["broker_cpu_us_per_login"] for point in levels], marker="o", label="per login")
        cpu.plot(online, [point["commands"]["broker_cpu_us_per_command"] for point in levels], marker="^",
                 label="per routed command")
        cpu.set_xscale("log")
        cpu.set_ylim(bottom=0)
        cpu.legend(fontsize=8)
    cpu.set(xlabel="devices online (log scale)", ylabel="broker CPU µs (all its threads)",
            title="Broker CPU against directory size")
    memory.bar([f"{count:,}" for count in online], [point["broker_rss_bytes_per_device"] for point in levels])
    memory.set(xlabel="devices online", ylabel="bytes of broker RSS per device", title="Broker memory per device")
    events = results["responsiveness"]
    names = ["quiet", "release_node", "snapshot_node", "snapshot_big", "release_big"]
    labels = [name.replace("_", "\n") + (f"\n{events[name]['devices']:,}" if "devices" in events[name] else "")
              for name in names]
    latency.bar(labels, [events[name].get("max_ms", 0) for name in names], label="max")
    latency.bar(labels, [events[name].get("p50_ms", 0) for name in names], label="p50")
    latency.axhline(50, color="red", linestyle="--", linewidth=1, label="50 ms")
    latency.set_yscale("log")
    latency.set(ylabel="find answer latency (ms, log)", title=f"Reactor responsiveness at {online[-1]:,} online")
    latency.tick_params(axis="x", labelsize=7)
    latency.legend(fontsize=8)
    figure.suptitle(f"{results['options']['nodes']} simulated nodes, one broker process "
                    f"(`{results['command']}`)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def orchestrate(argv: list[str]) -> None:
    from twisted.internet import defer, task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="small numbers (a few seconds): checks that it works")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-scale.json"))
    parser.add_argument("--chart", default=str(ROOT / "docs" / "performance" / "scale.png"), help="'' for none")
    options = parser.parse_args(argv)
    if options.quick:
        options.levels, options.nodes, options.batch, options.repeats = [10_000, 50_000], 10, 2000, 1
        options.commands, options.window, options.big = 1000, 50, 20_000
    else:
        options.levels, options.nodes, options.batch, options.repeats = [10_000, 100_000, 1_000_000], 100, 20_000, 3
        options.commands, options.window, options.big = 30_000, 200, 100_000

    def run(reactor):
        async def go() -> None:
            results = await main(reactor, options)
            Path(options.out).parent.mkdir(parents=True, exist_ok=True)
            Path(options.out).write_text(json.dumps(results, indent=2) + "\n")
            print(f"wrote {options.out}", file=sys.stderr, flush=True)
            if options.chart:
                print(f"wrote {draw(results, Path(options.chart))}", file=sys.stderr, flush=True)

        return defer.ensureDeferred(go())

    task.react(run)


if __name__ == "__main__":
    if sys.argv[1:2] == ["nodes"]:
        nodesMain(sys.argv[2:])
    else:
        orchestrate(sys.argv[1:])
