"""
devicehub's benchmark: `python bench/run.py [--quick] [--out bench/results.json] [--charts docs/performance]`.

Every scenario runs real processes on loopback: `twistd devicehub` roles, fleets of
simulated devices (bench/fleet.py, spread over 127.0.0.x source addresses), and the load
generators in this process. Progress goes to stderr; every figure to the JSON file;
charts (PNG, matplotlib) to --charts. docs/performance.md says what each figure means.

  a  idle capacity: devices on one node, RSS per connection, login rate
  b  command round trips, all roles in one process (Demand: one at a time, a window,
     fixed offered rates; HTTP POST with wait)
  c  the same over separate broker / node / api processes
  d  1, 2 and 4 nodes at the same total load: broker CPU per command
  e  the transports' own limits: a bare pyzmq DEALER->ROUTER echo, a bare Twisted line echo
  f  the device protocols (jsonl, watch, gt06, teltonika) on one all-in-one hub: logins/s,
     acked commands/s and hub CPU per command, hub CPU per uplink frame, each codec's
     ratio to JSON Lines (fleets: bench/protocol_fleet.py)
  g  devicehub against Mosquitto and NATS in the same shape and the same run: acked
     commands/s, one-at-a-time p50, CPU per command of server, fleet and caller, memory per
     idle device, and devicehub's ratios to theirs (bench/peers.py)
"""

import argparse
import atexit
import json
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.protocol import ProcessProtocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devicehub import OK, Demand  # noqa: E402
from devicehub.tap import tune_garbage_collector  # noqa: E402
from tests.support import free_ports  # noqa: E402

TWISTD = str(Path(sys.executable).parent / "twistd")
TICK = os.sysconf("SC_CLK_TCK")


def stat_cpu(path: Path) -> tuple[str, float]:
    """The name and the CPU seconds (user + system) of a process or thread, from its /proc stat file."""
    name, fields = path.read_text().split("(", 1)[1].rsplit(")", 1)
    fields = fields.split()
    return name, (int(fields[11]) + int(fields[12])) / TICK


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Process(ProcessProtocol):
    """A child process; its output is kept; RSS and CPU are read from /proc."""

    def __init__(self, reactor, args: list[str]) -> None:
        self.output = ""
        self.ended: defer.Deferred = defer.Deferred()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        reactor.spawnProcess(self, args[0], args, env=env, path=str(ROOT))

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode(errors="replace")

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(None)

    async def until(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.ended.called or time.monotonic() > deadline:
                raise RuntimeError(f"never saw {text!r}:\n{self.output[-2000:]}")
            await task.deferLater(self.reactor, 0.05, lambda: None)

    @property
    def pid(self) -> int:
        return self.transport.pid

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def rss_kib(self) -> int:
        return self._status("VmRSS")

    def wakeups(self) -> int:
        """How many times the main (reactor) thread has slept and been woken."""
        return self._status("voluntary_ctxt_switches")

    def cpu_seconds(self) -> float:
        return stat_cpu(Path(f"/proc/{self.pid}/stat"))[1]

    async def stop(self) -> None:
        if not self.ended.called:
            self.transport.signalProcess("TERM")
        await self.ended


class Bench:
    def __init__(self, reactor, options) -> None:
        self.reactor = reactor
        self.options = options
        self.processes: list[Process] = []
        self.tmp = tempfile.mkdtemp(prefix="devicehub-bench-")  # the hubs' stores
        atexit.register(shutil.rmtree, self.tmp, ignore_errors=True)  # however the run ends

    def spawn(self, args: list[str]) -> Process:
        process = Process(self.reactor, args)
        process.reactor = self.reactor
        self.processes.append(process)
        return process

    async def hub(self, roles: str, **ports) -> Process:
        args = [TWISTD, "-n", "--pidfile=", "-l", "-", "devicehub", "--roles", roles,
                "--store", os.path.join(self.tmp, f"{time.monotonic_ns()}.sqlite3")]
        for name, value in ports.items():
            for one in value if isinstance(value, list) else [value]:  # a list: a repeated option (--listen)
                args += [f"--{name.replace('_', '-')}", str(one)]
        process = self.spawn(args)
        await process.until("Broker warmed up" if "broker" in roles else "Listening for", 60)
        if "node" in roles:
            await process.until("Registered with the broker", 60)
        return process

    async def relay(self, devices: int, frontend: str, kind: str = "epoll") -> Process:
        """
        bench/relay.py (no devicehub: the floor of a Python hub) on these ports, listening;
        C{kind} C{"twisted"} runs it on Twisted and txZMQ, C{"deferred"} also with a Deferred
        and a deadline per command.
        """
        flags = {"epoll": [], "twisted": ["--twisted"], "deferred": ["--twisted", "--deferred"]}[kind]
        process = self.spawn([sys.executable, str(ROOT / "bench" / "relay.py"), "--devices", str(devices),
                              "--frontend", frontend, *flags])
        await process.until("Listening for devices", 60)
        return process

    async def fleet(self, port: int, count: int, source: str, prefix: str, **extra) -> tuple[Process, dict]:
        args = [sys.executable, str(ROOT / "bench" / "fleet.py"), "--port", str(port), "--count", str(count),
                "--source", source, "--prefix", prefix]
        for name, value in extra.items():  # True: a flag
            args += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
        process = self.spawn(args)
        await process.until('"ready"', 600)
        ready = json.loads(next(line for line in process.output.splitlines() if '"ready"' in line))
        return process, ready

    async def stopAll(self) -> None:
        for process in reversed(self.processes):
            await process.stop()
        self.processes = []

    # -- load generators

    async def sequential(self, demand: Demand, imeis: list[str], count: int) -> dict:
        samples = []
        for i in range(count):
            started = time.perf_counter()
            assert await demand.send(imeis[i % len(imeis)], "0x10", i) == OK
            samples.append(time.perf_counter() - started)
        return {"sent": count, **percentiles(samples)}

    async def windowed(self, call, count: int, window: int) -> dict:
        """Keep C{window} calls in flight until C{count} are done; C{call(i)} returns a Deferred."""
        samples: list[float] = []
        done: defer.Deferred = defer.Deferred()
        clock = time.perf_counter
        issued = acked = 0

        # Plain callbacks rather than a coroutine per call: the generator shares the CPUs
        # with what it measures, so it should cost as little as it can.
        def start() -> None:
            nonlocal issued
            i, issued = issued, issued + 1
            call(i).addCallbacks(finished, failed, callbackArgs=(clock(),))

        def finished(result, started: float) -> None:
            nonlocal acked
            samples.append(clock() - started)
            acked += result == OK
            if issued < count:
                start()
            elif len(samples) == count and not done.called:
                done.callback(None)

        def failed(failure) -> None:
            if not done.called:
                done.errback(failure)

        started = clock()
        for _ in range(min(window, count)):
            start()
        await done
        elapsed = clock() - started
        return {"per_s": round(acked / elapsed), "sent": count, "acked": acked, **percentiles(samples)}

    async def repeated(self, run, key: str = "per_s") -> dict:
        """The run with the median C{key} of C{options.repeats} runs (2 shared cores are noisy), and every run's C{key}."""
        runs = [await run() for _ in range(self.options.repeats)]
        runs.sort(key=lambda figure: figure[key])
        median = {**runs[len(runs) // 2], f"runs_{key}": [figure[key] for figure in runs]}
        if "sent" in median:
            median["sent_in_all_runs"] = sum(figure["sent"] for figure in runs)
        return median

    async def offered(self, demand: Demand, imeis: list[str], rate: int, seconds: float) -> dict:
        """Send at a fixed rate (open loop); latency of each command."""
        samples, pending = [], []
        total = int(rate * seconds)
        started = time.perf_counter()
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0.002:
                await task.deferLater(self.reactor, delay, lambda: None)
            sent = time.perf_counter()
            pending.append(demand.send(imeis[i % len(imeis)], "0x10", i).addCallback(
                lambda result, sent=sent: samples.append(time.perf_counter() - sent)))
        await defer.gatherResults(pending)
        achieved = total / (time.perf_counter() - started)
        return {"offered_per_s": rate, "achieved_per_s": round(achieved), "sent": total, **percentiles(samples)}

    async def http(self, url: str, prefix: str, devices: int, count: int, window: int) -> dict:
        """POST commands with wait, C{window} at once: with wrk when installed, else a Twisted client."""
        if shutil.which("wrk"):
            return await self.wrk(url, prefix, devices, window)
        import treq
        from twisted.web.client import Agent, HTTPConnectionPool

        pool = HTTPConnectionPool(self.reactor)
        pool.maxPersistentPerHost = window
        client = treq.client.HTTPClient(Agent(self.reactor, pool=pool))

        async def post(i):
            response = await client.post(f"{url}/devices/{prefix}{i % devices:06}/commands", data=b'{"instruct":"0x10"}')
            await response.content()
            return OK if response.code == 200 else response.code

        try:
            return {"tool": "treq", **await self.windowed(lambda i: defer.ensureDeferred(post(i)), count, window)}
        finally:
            await pool.closeCachedConnections()

    async def wrk(self, url: str, prefix: str, devices: int, window: int) -> dict:
        seconds = max(1, round(self.options.seconds * 3))
        process = self.spawn(["wrk", "-t1", f"-c{window}", f"-d{seconds}s", "--latency",
                              "-s", str(ROOT / "bench" / "post.lua"), url, "--", prefix, str(devices)])
        await process.ended
        self.processes.remove(process)
        return {"tool": "wrk", **parse_wrk(process.output)}

    async def roundtrips(self, frontend: str, imeis: list[str], url: str | None, label: str, prefix: str,
                         windows: tuple[int, ...] = (200,)) -> dict:
        """
        Every Demand figure, and HTTP's when C{url} is given (devices C{prefix}000000 ... for HTTP).
        The window of 200 is the headline figure; with more C{windows}, also a sweep of them all.
        """
        n = self.options.commands
        demand = Demand(frontend, timeout=30)
        send = lambda i: demand.send(imeis[i % len(imeis)], "0x10", i)  # noqa: E731
        try:
            await self.sequential(demand, imeis, self.options.warmUp)
            result = {"demand_sequential": await self.repeated(lambda: self.sequential(demand, imeis, n), "p50_ms")}
            progress(f"{label}: Demand one at a time p50 {result['demand_sequential']['p50_ms']} ms")
            await self.windowed(send, self.options.warmUp, 200)
            sweep = []
            for window in sorted({200, *windows}):
                figure = {"window": window, **await self.repeated(lambda: self.windowed(send, n * 5, window))}
                sweep.append(figure)
                progress(f"{label}: Demand window of {window}: {figure['per_s']} commands/s, p99 {figure['p99_ms']} ms")
            result["demand_window"] = next(figure for figure in sweep if figure["window"] == 200)
            if len(sweep) > 1:
                result["demand_window_sweep"] = sweep
            result["demand_offered"] = []
            for rate in self.options.rates:
                figure = await self.offered(demand, imeis, rate, self.options.seconds)
                result["demand_offered"].append(figure)
                progress(f"{label}: offered {rate}/s -> p99 {figure['p99_ms']} ms")
            if url is not None:
                result["http_window"] = await self.http(url, prefix, len(imeis), n * 2, 50)
                progress(f"{label}: HTTP 50 in flight: {result['http_window']['per_s']} commands/s")
            result["commands_sent"] = 2 * self.options.warmUp + sum(
                figure["sent_in_all_runs"] for figure in [result["demand_sequential"], *sweep]
            ) + sum(figure["sent"] for figure in [*result["demand_offered"], result.get("http_window", {"sent": 0})])
            return result
        finally:
            demand.close()

    # -- scenarios

    async def idle(self) -> dict:
        devices, frontend, backend, events = free_ports(4)
        # Under the 20 000 open files, --max-devices would be derived as 18 000 (a tenth more
        # kept for connections logging in): 19 000 devices and at most 800 logging in fit too.
        hub = await self.hub("broker,node", devices=f"tcp:{devices}:interface=0.0.0.0",
                             frontend=f"tcp://127.0.0.1:{frontend}", backend=f"tcp://127.0.0.1:{backend}",
                             events=f"tcp://127.0.0.1:{events}", max_devices=max(self.options.idle, 1000),
                             max_logins=800)
        base = hub.rss_kib()
        per_fleet = self.options.idle // self.options.fleets
        points = [{"devices": 0, "rss_kib": base}]
        demand = Demand(f"tcp://127.0.0.1:{frontend}", timeout=5)
        logging_in = True

        async def sample() -> None:  # memory against devices online, while they log in
            while logging_in:
                online = await demand.gettotal()
                points.append({"devices": online, "rss_kib": hub.rss_kib()})
                await task.deferLater(self.reactor, 0.2, lambda: None)

        sampler = defer.ensureDeferred(sample())
        cpu = hub.cpu_seconds()
        fleets = [self.fleet(devices, per_fleet, f"127.0.0.{2 + i}", f"f{i}-", batch=800 // self.options.fleets)
                  for i in range(self.options.fleets)]
        readies = [ready for _, ready in await defer.gatherResults([defer.ensureDeferred(f) for f in fleets])]
        cpu = hub.cpu_seconds() - cpu
        logging_in = False
        await sampler
        demand.close()
        total = sum(ready["ready"] for ready in readies)
        # The fleets log in at the same time; each times its own logins (not its start-up).
        elapsed = max(ready["ready"] / ready["login_per_s"] for ready in readies)
        await task.deferLater(self.reactor, 1, lambda: None)
        rss = hub.rss_kib()
        points.append({"devices": total, "rss_kib": rss})
        result = {
            "devices": total,
            "rss_base_kib": base,
            "rss_kib": rss,
            "kib_per_connection": round((rss - base) / max(total, 1), 2),
            "logins_per_s": round(total / elapsed),
            "hub_cpu_us_per_login": round(cpu / max(total, 1) * 1e6, 1),
            "memory_points": points,
        }
        progress(f"a: {total} devices, {result['kib_per_connection']} KiB each, {result['logins_per_s']} logins/s")
        await self.stopAll()
        return result

    async def allInOne(self) -> dict:
        devices, http, frontend, backend, events = free_ports(5)
        hub = await self.hub("broker,node,api", devices=f"tcp:{devices}:interface=127.0.0.1",
                             http=f"tcp:{http}:interface=127.0.0.1", frontend=f"tcp://127.0.0.1:{frontend}",
                             backend=f"tcp://127.0.0.1:{backend}", events=f"tcp://127.0.0.1:{events}")
        await self.fleet(devices, self.options.devices, "127.0.0.2", "b-")
        imeis = [f"b-{i:06}" for i in range(self.options.devices)]
        cpu = hub.cpu_seconds()
        result = await self.roundtrips(f"tcp://127.0.0.1:{frontend}", imeis, f"http://127.0.0.1:{http}", "b", "b-",
                                       windows=self.options.windows)
        result["hub_cpu_seconds"] = round(hub.cpu_seconds() - cpu, 2)
        result["hub_rss_kib"] = hub.rss_kib()
        if shutil.which("wrk"):
            # The api role is stateless: a second api process (over ZeroMQ to the same broker)
            # takes the HTTP work the first cannot, on the same two cores.
            second = free_ports(1)[0]
            await self.hub("api", http=f"tcp:{second}:interface=127.0.0.1", frontend=f"tcp://127.0.0.1:{frontend}",
                           events=f"tcp://127.0.0.1:{events}")
            urls = [f"http://127.0.0.1:{http}", f"http://127.0.0.1:{second}"]
            both = await defer.gatherResults([defer.ensureDeferred(self.wrk(url, "b-", len(imeis), 25)) for url in urls])
            result["http_two_api_processes"] = {"per_s": sum(figure["per_s"] for figure in both), "processes": both}
            progress(f"b: HTTP over 2 api processes, 25 in flight each: {result['http_two_api_processes']['per_s']} commands/s")
        await self.stopAll()
        return result

    async def cluster(self, nodes: int, label: str, full: bool) -> dict:
        frontend, backend, events, http = free_ports(4)
        zmq = {"frontend": f"tcp://127.0.0.1:{frontend}", "backend": f"tcp://127.0.0.1:{backend}",
               "events": f"tcp://127.0.0.1:{events}"}
        broker = await self.hub("broker", **zmq)
        imeis = []
        per_node = self.options.devices // nodes
        for i in range(nodes):
            port = free_ports(1)[0]
            await self.hub("node", devices=f"tcp:{port}:interface=127.0.0.1", node_id=f"node{i}", **zmq)
            await self.fleet(port, per_node, f"127.0.0.{2 + i}", f"{label}{i}-")
            imeis += [f"{label}{i}-{j:06}" for j in range(per_node)]
        url = None
        if full:
            await self.hub("api", http=f"tcp:{http}:interface=127.0.0.1", **zmq)
            url = f"http://127.0.0.1:{http}"
        cpu = broker.cpu_seconds()
        if full:
            result = await self.roundtrips(zmq["frontend"], imeis, url, label, f"{label}0-")
            result["broker_cpu_us_per_command"] = round(
                (broker.cpu_seconds() - cpu) / result["commands_sent"] * 1e6, 1)
        else:
            demand = Demand(zmq["frontend"], timeout=30)
            send = lambda i: demand.send(imeis[i % len(imeis)], "0x10", i)  # noqa: E731
            result = {"demand_window": await self.repeated(lambda: self.windowed(send, self.options.commands * 5, 200))}
            commands = result["demand_window"]["sent_in_all_runs"]
            result["broker_cpu_us_per_command"] = round((broker.cpu_seconds() - cpu) / commands * 1e6, 1)
            progress(f"{label}: {nodes} nodes, window of 200: {result['demand_window']['per_s']} commands/s")
            # The same load on the broker whatever the number of nodes: a fixed rate all of them carry.
            result["demand_fixed_rate"] = await self.fixedRate(broker, demand, imeis, f"{label}: {nodes} nodes")
            if nodes > 1:  # the control: as many nodes connected, one of them carrying the load
                first = [imei for imei in imeis if imei.startswith(f"{label}0-")]
                result["demand_fixed_rate_one_node_loaded"] = await self.fixedRate(
                    broker, demand, first, f"{label}: {nodes} nodes, the load on one")
            demand.close()
        result["nodes"] = nodes
        await self.stopAll()
        return result

    async def fixedRate(self, broker: Process, demand: Demand, imeis: list[str], label: str) -> dict:
        """L{offered} at the fixed rate, with the broker's CPU time and wake-ups per command."""
        cpu, wakeups = broker.cpu_seconds(), broker.wakeups()
        fixed = await self.offered(demand, imeis, self.options.fixedRate, self.options.seconds)
        fixed["broker_cpu_us_per_command"] = round((broker.cpu_seconds() - cpu) / fixed["sent"] * 1e6, 1)
        fixed["broker_wakeups_per_command"] = round((broker.wakeups() - wakeups) / fixed["sent"], 3)
        progress(f"{label}, {fixed['offered_per_s']}/s offered: {fixed['achieved_per_s']}/s, p99 {fixed['p99_ms']} ms, "
                 f"broker {fixed['broker_cpu_us_per_command']} us and {fixed['broker_wakeups_per_command']} "
                 "wake-ups/command")
        return fixed

    async def transports(self) -> dict:
        import zmq

        echo = self.spawn([sys.executable, str(ROOT / "bench" / "echo.py"), "zmq", "0"])
        await echo.until("ready")
        port = int(echo.output.split()[-1])
        context = zmq.Context.instance()
        dealer = context.socket(zmq.DEALER)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        count, window = self.options.echoes, 200
        started = time.perf_counter()
        for i in range(window):
            dealer.send(b"%d" % i)
        for i in range(window, count + window):
            dealer.recv()
            if i < count:
                dealer.send(b"%d" % i)
        zmq_rate = round(count / (time.perf_counter() - started))
        dealer.close(0)
        lines = self.spawn([sys.executable, str(ROOT / "bench" / "echo.py"), "lines", "0"])
        await lines.until("ready")
        line_port = int(lines.output.split()[-1])
        conn = socket.create_connection(("127.0.0.1", line_port))
        line = b'{"type":"ack","ident":1}\n'
        started = time.perf_counter()
        sent, received = window, 0
        conn.sendall(line * window)
        while received < count:
            got = conn.recv(65536).count(b"\n")  # whole lines echo back; a split one is counted once
            received += got
            more = min(got, count - sent)
            if more > 0:
                conn.sendall(line * more)
                sent += more
        line_rate = round(count / (time.perf_counter() - started))
        conn.close()
        progress(f"e: bare ZeroMQ echo {zmq_rate}/s, bare Twisted line echo {line_rate}/s")
        await self.stopAll()
        return {"zmq_echo_per_s": zmq_rate, "line_echo_per_s": line_rate, "window": window}

    # -- scenario f: the device protocols

    async def protocols(self) -> dict:
        """
        Every protocol against one all-in-one hub, in the same run: logins, a window of
        commands, and a flood of positions, with the hub's CPU per login, command and frame.
        """
        options = self.options
        ports = dict(zip(("devices", "frontend", "backend", "events", "metrics", *PROTOCOLS), free_ports(9)))
        listen = [f"{name}=tcp:{ports[name]}:interface=127.0.0.1" for name in PROTOCOLS if name != "jsonl"]
        hub = await self.hub("broker,node", devices=f"tcp:{ports['devices']}:interface=127.0.0.1",
                             frontend=f"tcp://127.0.0.1:{ports['frontend']}",
                             backend=f"tcp://127.0.0.1:{ports['backend']}", events=f"tcp://127.0.0.1:{ports['events']}",
                             metrics=f"tcp:{ports['metrics']}:interface=127.0.0.1", listen=listen)
        metrics = f"http://127.0.0.1:{ports['metrics']}/metrics"
        demand = Demand(f"tcp://127.0.0.1:{ports['frontend']}", timeout=30)
        n = options.protocolDevices
        fleets, imeis, result = {}, {}, {}
        try:
            # (a) logins, one protocol after another; each fleet stays connected for (b) and (c).
            for index, (name, (prefix, _)) in enumerate(PROTOCOLS.items()):
                port = ports["devices" if name == "jsonl" else name]
                fleets[name] = self.spawn([
                    sys.executable, str(ROOT / "bench" / "protocol_fleet.py"), "--protocol", name, "--port", str(port),
                    "--count", str(n), "--source", f"127.0.0.{2 + index}", "--prefix", prefix])
            await defer.gatherResults([defer.ensureDeferred(fleet.until('"loaded"', 60)) for fleet in fleets.values()])
            for name, (prefix, _) in PROTOCOLS.items():
                fleet = fleets[name]
                online = await demand.gettotal()
                cpu, started = hub.cpu_seconds(), time.perf_counter()
                fleet.transport.write(b"login\n")
                while await demand.gettotal() < online + n:  # until the broker counts them all
                    await task.deferLater(self.reactor, 0.005, lambda: None)
                elapsed, cpu = time.perf_counter() - started, hub.cpu_seconds() - cpu
                ready = await reported(fleet, "ready")
                result[name] = {"devices": n, "logins_per_s": round(n / elapsed),
                                "fleet_logins_per_s": ready["login_per_s"],
                                "hub_cpu_us_per_login": round(cpu / n * 1e6, 1)}
                progress(f"f: {name}: {n} logins at {result[name]['logins_per_s']}/s, "
                         f"hub {result[name]['hub_cpu_us_per_login']} us each")
                before = (await scrape(metrics))[name]
                fleet.transport.write(b"report\n")  # a first position (Teltonika takes commands after one)
                await reported(fleet, "reported")
                while (await scrape(metrics))[name] < before + n:
                    await task.deferLater(self.reactor, 0.05, lambda: None)
                imeis[name] = [f"{prefix}{i:0{15 - len(prefix)}d}" for i in range(1, n + 1)]

            # (b) acked commands, a window spread over every device of the protocol; the protocols
            # take turns run after run, so that the machine's drift touches them alike.
            def sender(name, instruct, data):
                devices = imeis[name]
                return lambda i: demand.send(devices[i % len(devices)], instruct, data)

            for name, instruct, data, _ in COMMANDS:
                await self.windowed(sender(name, instruct, data), options.warmUp, options.protocolWindow)
            runs = {key: [] for key in COMMANDS}
            for _ in range(options.repeats):
                for key in COMMANDS:
                    name, instruct, data, _ = key
                    before = (await scrape(metrics))[name]
                    cpu = hub.cpu_seconds()
                    figure = await self.windowed(sender(name, instruct, data), options.protocolCommands,
                                                 options.protocolWindow)
                    cpu = hub.cpu_seconds() - cpu
                    frames = (await scrape(metrics))[name] - before
                    figure["hub_cpu_us_per_command"] = round(cpu / max(figure["acked"], 1) * 1e6, 1)
                    figure["frames_per_command"] = round(frames / figure["sent"], 2)
                    runs[key].append(figure)
                    command = instruct + (f",{data}" if data else "")
                    progress(f"f: {name}: {command!r}, {options.protocolWindow} in flight: "
                             f"{figure['per_s']} commands/s, hub {figure['hub_cpu_us_per_command']} us each")
            for (name, instruct, data, field), figures in runs.items():
                result[name][field] = {"instruct": instruct, "data": data, "window": options.protocolWindow,
                                       **median(figures, "hub_cpu_us_per_command", "per_s")}

            # (c) uplink: positions as fast as the connections take them; hub CPU per frame decoded.
            runs = {name: [] for name in PROTOCOLS}
            for _ in range(options.repeats):
                for name in PROTOCOLS:
                    runs[name].append(await self.flood(hub, fleets[name], name, metrics))
                    figure = runs[name][-1]
                    progress(f"f: {name}: uplink {figure['frames_per_s']} frames/s decoded, "
                             f"{figure['published_per_s']}/s published, hub {figure['hub_cpu_us_per_frame']} us each")
            for name in PROTOCOLS:
                result[name]["uplink"] = median(runs[name], "hub_cpu_us_per_frame", "frames_per_s", "published_per_s")
        finally:
            demand.close()
            await self.stopAll()
        ratio = lambda a, b: round(a / b, 2) if b else None  # noqa: E731 (CPU is read in 10 ms ticks)
        jsonl = result["jsonl"]
        for name in PROTOCOLS:
            figures = result[name]
            figures["vs_jsonl"] = {
                "hub_cpu_per_login": ratio(figures["hub_cpu_us_per_login"], jsonl["hub_cpu_us_per_login"]),
                "hub_cpu_per_command": ratio(figures["commands"]["hub_cpu_us_per_command"],
                                             jsonl["commands"]["hub_cpu_us_per_command"]),
                "hub_cpu_per_uplink_frame": ratio(figures["uplink"]["hub_cpu_us_per_frame"],
                                                  jsonl["uplink"]["hub_cpu_us_per_frame"]),
                "logins_per_s": ratio(figures["logins_per_s"], jsonl["logins_per_s"]),
                "commands_per_s": ratio(figures["commands"]["per_s"], jsonl["commands"]["per_s"]),
            }
            if "commands_one_reply" in figures:
                figures["vs_jsonl"]["hub_cpu_per_command_one_reply"] = ratio(
                    figures["commands_one_reply"]["hub_cpu_us_per_command"],
                    jsonl["commands"]["hub_cpu_us_per_command"])
        result["limit_vs_jsonl"] = 1.5
        return result

    async def flood(self, hub: Process, fleet: Process, name: str, metrics: str) -> dict:
        """
        One flood: each device sends its positions as fast as its connection takes them, then
        a heartbeat; the fleet reports once every heartbeat is answered (every frame decoded),
        and the hub's CPU is read once it has also published every position as an event.
        """
        before = await scrape(metrics)
        cpu, started = hub.cpu_seconds(), time.perf_counter()
        fleet.transport.write(b"flood %d %d\n" % (self.options.floodDevices, self.options.floodFrames))
        flooded = await reported(fleet, "flooded", poll=0.005)
        frames = flooded["flooded"]
        # The events of the last frames may still be on their way to the broker: wait until the
        # hub is idle (from /proc, free) and then check the count (a scrape costs the hub ~2 ms).
        used = hub.cpu_seconds() - cpu
        while True:
            elapsed = time.perf_counter() - started
            await task.deferLater(self.reactor, 0.05, lambda: None)
            now = hub.cpu_seconds() - cpu
            if now == used:
                after = await scrape(metrics)
                if after["events"] - before["events"] >= frames:
                    break
            used = now
        elapsed -= flooded["prepared_s"]  # the fleet building its positions: the hub waits
        return {"frames": frames, "frames_per_s": round(frames / flooded["seconds"]),
                "published_per_s": round(frames / elapsed), "devices": flooded["devices"],
                "hub_cpu_us_per_frame": round(used / frames * 1e6, 2),
                # The hub's devicehub_device_frames_total, less the heartbeats that closed the flood.
                "frames_counted_by_hub": int(after[name] - before[name])
                - (flooded["devices"] if name != "teltonika" else 0)}


PROTOCOLS = {  # name: (identity prefix, the command sent in scenario f: each protocol's usual one)
    "jsonl": ("86100000", "0x10"),
    "watch": ("86200000", "CR"),
    "gt06": ("86300000", "Relay,1#"),
    "teltonika": ("86400000", "getinfo"),
}
# The command runs of scenario f: (protocol, instruct, data, key in its figures). A watch answers
# CR with a position besides its reply; UPLOAD,600 (one reply frame) tells the two costs apart.
COMMANDS = [(name, instruct, None, "commands") for name, (_, instruct) in PROTOCOLS.items()]
COMMANDS.insert(2, ("watch", "UPLOAD", "600", "commands_one_reply"))


async def reported(process: Process, key: str, timeout: float = 120, poll: float = 0.02) -> dict:
    """The next JSON line with C{key} that C{process} prints (each is taken once)."""
    taken = getattr(process, "taken", 0)
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in process.output.splitlines() if line.startswith("{")]
        for i, line in enumerate(lines[taken:], taken):
            figures = json.loads(line)
            if "error" in figures:
                raise RuntimeError(f"the fleet failed: {figures['error']}")
            if key in figures:
                process.taken = i + 1
                return figures
        if process.ended.called or time.monotonic() > deadline:
            raise RuntimeError(f"never saw {key!r}:\n{process.output[-2000:]}")
        await task.deferLater(process.reactor, poll, lambda: None)


async def scrape(url: str) -> dict[str, float]:
    """
    From a hub's --metrics endpoint: C{devicehub_device_frames_total} by protocol, and
    C{devicehub_events_published_total} as C{"events"}.
    """
    import treq

    response = await treq.get(url, persistent=False)
    text = (await response.content()).decode()
    figures = {protocol: 0.0 for protocol in PROTOCOLS}
    figures.update((protocol, float(value)) for protocol, value in
                   re.findall(r'^devicehub_device_frames_total\{protocol="([^"]+)"\} (\S+)$', text, re.M))
    events = re.search(r"^devicehub_events_published_total (\S+)$", text, re.M)
    figures["events"] = float(events.group(1)) if events else 0.0
    return figures


def median(runs: list[dict], key: str, *others: str) -> dict:
    """The run with the median C{key}, with every run's C{key} and C{others} (in run order) and their medians."""
    middle = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    ordered = sorted(runs, key=lambda figure: figure[key])
    figures = {**ordered[len(ordered) // 2]}
    for k in (key, *others):
        figures[f"runs_{k}"] = [figure[k] for figure in runs]
        figures[f"median_{k}"] = middle(figures[f"runs_{k}"])
    return figures


def parse_wrk(output: str) -> dict:
    """The figures of a wrk run (with --latency): acked = answers with status 200."""
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    seconds = float(re.search(r"requests in ([\d.]+)s", output).group(1))
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    acked = requests - (int(failed.group(1)) if failed else 0)
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latency = {}
    for percent, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M):
        latency[f"p{percent}_ms"] = round(float(value) * units[unit], 3)
    figures = {"per_s": round(acked / seconds), "sent": requests, "acked": acked, **latency}
    if errors:
        figures["socket_errors"] = errors.group(1).strip()
    return figures


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)  # noqa: E731
    return {"p50_ms": pick(0.5), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "max_ms": round(ordered[-1] * 1000, 3)}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    import twisted
    import zmq

    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "twisted": twisted.__version__, "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "open_files": __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[0]}


async def main(reactor, options) -> None:
    tune_garbage_collector()  # as twistd devicehub does: the generator shares the CPUs it measures
    bench = Bench(reactor, options)
    results = {"machine": machine(), "command": " ".join(sys.argv), "options": vars(options).copy()}
    scenarios = {
        "e_transports": bench.transports,
        "a_idle": bench.idle,
        "b_all_in_one": bench.allInOne,
        "c_cluster": lambda: bench.cluster(1, "c", full=True),
        "d_nodes": lambda: defer.gatherResults([]),  # replaced below: runs one after another
        "f_protocols": bench.protocols,
        "g_peers": lambda: __import__("peers").Peers(bench).run(),  # bench/peers.py (it imports this module)
    }
    try:
        for name, run in scenarios.items():
            if options.only and name[0] not in options.only:
                continue
            if name == "d_nodes":
                results[name] = [await bench.cluster(n, f"d{n}-", full=False) for n in (1, 2, 4)]
            else:
                results[name] = await run()
    finally:
        await bench.stopAll()
    if options.only:  # a partial run: figures only, no ratios or charts
        print(json.dumps(results, indent=2))
        return
    e = results["e_transports"]
    results["ratios"] = {
        "b_demand_window_vs_zmq_echo": round(results["b_all_in_one"]["demand_window"]["per_s"] / e["zmq_echo_per_s"], 3),
        "b_demand_window_vs_line_echo": round(results["b_all_in_one"]["demand_window"]["per_s"] / e["line_echo_per_s"], 3),
        "c_demand_window_vs_zmq_echo": round(results["c_cluster"]["demand_window"]["per_s"] / e["zmq_echo_per_s"], 3),
        "f_protocols_vs_jsonl": {name: results["f_protocols"][name]["vs_jsonl"] for name in PROTOCOLS},
        "g_peers": results["g_peers"]["ratios"],
    }
    Path(options.out).parent.mkdir(parents=True, exist_ok=True)
    Path(options.out).write_text(json.dumps(results, indent=2) + "\n")
    progress(f"wrote {options.out}")
    if options.charts:
        from charts import draw  # bench/charts.py

        for path in draw(results, Path(options.charts)):
            progress(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="tiny numbers: checks that the benchmark works")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--charts", default=None, help="directory for PNG charts (needs matplotlib)")
    parser.add_argument("--only", default="", help="letters of the scenarios to run, e.g. 'ab' (prints, writes nothing)")
    options = parser.parse_args()
    if options.quick:
        options.idle, options.fleets, options.devices, options.commands = 200, 2, 20, 100
        options.rates, options.seconds = [200, 500], 0.5
        options.fixedRate = 200
        options.echoes = 2000
        options.repeats = 1
        options.windows = [10, 50]
        options.warmUp = 50
        # 1 000 commands: ~45 ms of the hub's CPU, read in 10 ms ticks (200 could read none).
        options.protocolDevices, options.protocolWindow, options.protocolCommands = 20, 10, 1000
        options.floodDevices, options.floodFrames = 10, 320
    else:
        options.idle, options.fleets, options.devices, options.commands = 19_000, 4, 100, 4000
        options.rates, options.seconds = [1000, 2500, 5000, 10000], 3.0
        options.fixedRate = 5000
        options.echoes = 500_000
        options.repeats = 3
        options.windows = [10, 50, 200, 1000]
        options.warmUp = 2000
        options.protocolDevices, options.protocolWindow, options.protocolCommands = 2000, 200, 20_000
        options.floodDevices, options.floodFrames = 100, 2000
    sys.path.insert(0, str(ROOT / "bench"))
    from peers import configure  # scenario g's numbers

    configure(options, options.quick)
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))
