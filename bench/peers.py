"""
Scenario g, devicehub against its peers: `python bench/peers.py [--quick]` (prints the JSON),
or `python bench/run.py --only g`.

Mosquitto (MQTT), nats-server (NATS) and devicehub's all-in-one hub in the same run and the
same shape: 1 000 devices, each on its own TCP connection, each answering a command at once
with a send() of its own (TCP_NODELAY, one ack per TCP segment), a Python caller keeping 200
commands in flight (then one at a time), every process on this machine. Per system: acked
commands/s with the window and its p50/p99, the p50 of one command at a time, the CPU µs per
command of the server, of the device fleet and of the caller, and the server's RSS growth
per idle connected device (10 000 of them; the median of three runs, as the rates).
devicehub's figures are also given as ratios to each peer's, with the issue's targets
checked against what was measured, and beside them the transports' own round trips
(bench/floor.py): what one command at a time costs before any code runs, over ZeroMQ and
TCP for devicehub, over TCP alone for its peers.

  Mosquitto  a config file: one loopback listener, anonymous, no persistence, no limit on
             connections; devices from bench/peer_fleet.py --protocol mqtt, the caller
             bench/peer_caller.py --protocol mqtt (paho-mqtt, its own process)
  NATS       nats-server -a 127.0.0.1 -p PORT; bench/peer_fleet.py --protocol nats, the
             caller bench/peer_caller.py --protocol nats (nats-py request-reply)
  devicehub  twistd devicehub --roles broker,node,api; bench/fleet.py --each-write, the
             caller a Demand in this process (its CPU: time.process_time)
  relay      no devicehub: bench/relay.py, a bare epoll loop that relays the Demand's
             commands to the devices and their acks back, in Python (the floor of a Python
             hub's CPU and latency with devicehub's transports); devicehub's fleet and caller
  relay_twisted   the same relay on Twisted (devicehub's reactor, its txZMQ socket, a
             Protocol per device): the floor of a hub on the stack devicehub is built on
  relay_deferred  relay_twisted plus a Deferred and a deadline per command, at one role:
             the floor of such a hub that also follows the project's idiom for every wait

The fleets connect from 127.0.7.x source addresses, none of which the other scenarios use.
"""

import json
import os
import sys
import time
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import Bench, Process, median, progress, reported  # noqa: E402

from devicehub import Demand  # noqa: E402
from devicehub.tap import tune_garbage_collector  # noqa: E402
from tests.support import free_ports  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"
NATS_SERVER = "/usr/sbin/nats-server"
SYSTEMS = ("mosquitto", "nats", "devicehub")
"""The systems measured for commands and memory; the relays (bench/relay.py) are measured for commands only."""
RELAYS = {"relay": ("epoll", "127.0.7.1"), "relay_twisted": ("twisted", "127.0.7.20"),
          "relay_deferred": ("deferred", "127.0.7.21")}
"""Each relay in the hub's place: its name in the results, its kind (L{Bench.relay}) and its fleet's source address."""
# The targets for devicehub and their limits: the rate must reach its limit, the rest stay under theirs.
TARGETS = {
    "rate_at_least_1_2x_mosquitto": 1.2,
    "p50_at_most_1_5x_mosquitto": 1.5,
    "hub_cpu_at_most_25_us": 25,
    "demand_cpu_at_most_15_us": 15,
    "memory_at_most_1_2x_mosquitto": 1.2,
}


def configure(options, quick: bool) -> None:
    """Scenario g's numbers on C{options} (tiny with C{quick})."""
    if quick:
        options.peerDevices, options.peerCommands, options.peerSequential, options.peerIdle = 50, 500, 100, 200
        options.peerWarmUp, options.floorRoundTrips = 100, 500
    else:
        options.peerDevices, options.peerCommands, options.peerSequential, options.peerIdle = 1000, 20_000, 2000, 10_000
        options.peerWarmUp, options.floorRoundTrips = 2000, 5000
    options.peerWindow = 200


class System:
    """One system under test: its server, fleet and caller, and C{run(count, window)}."""

    def __init__(self, name: str, server: Process, fleet: Process) -> None:
        self.name, self.server, self.fleet = name, server, fleet

    def callerSeconds(self) -> float:
        raise NotImplementedError

    async def run(self, count: int, window: int) -> dict:
        raise NotImplementedError

    async def measured(self, count: int, window: int) -> dict:
        """C{run}, with the CPU µs per acked command of the server, the fleet and the caller."""
        before = self.server.cpu_seconds(), self.fleet.cpu_seconds(), self.callerSeconds()
        figure = await self.run(count, window)
        after = self.server.cpu_seconds(), self.fleet.cpu_seconds(), self.callerSeconds()
        acked = max(figure["acked"], 1)
        for role, start, end in zip(("server", "fleet", "caller"), before, after):
            figure[f"{role}_cpu_us_per_command"] = round((end - start) / acked * 1e6, 1)
        figure["window"] = window
        return figure


class PeerSystem(System):
    """Mosquitto or NATS: the caller is bench/peer_caller.py, told what to run on its stdin."""

    def __init__(self, name: str, server: Process, fleet: Process, caller: Process) -> None:
        super().__init__(name, server, fleet)
        self.caller = caller

    def callerSeconds(self) -> float:
        return self.caller.cpu_seconds()

    async def run(self, count: int, window: int) -> dict:
        self.caller.transport.write(b"window %d %d\n" % (count, window))
        return await reported(self.caller, "per_s", timeout=300, poll=0.005)


class DemandSystem(System):
    """devicehub's hub, or the relay in its place: a system whose caller is a Demand in this process."""

    def __init__(self, bench: Bench, server: Process, fleet: Process, frontend: str, imeis: list[str],
                 name: str = "devicehub") -> None:
        super().__init__(name, server, fleet)
        self.bench, self.imeis = bench, imeis
        self.demand = Demand(frontend, timeout=30)

    def callerSeconds(self) -> float:
        return time.process_time()  # this process, every thread (the reactor's and ZeroMQ's)

    async def run(self, count: int, window: int) -> dict:
        if window == 1:
            figure = await self.bench.sequential(self.demand, self.imeis, count)
            return {"acked": count, **figure}  # sequential asserts that every answer is OK
        imeis, send = self.imeis, self.demand.send
        return await self.bench.windowed(lambda i: send(imeis[i % len(imeis)], "0x10", i), count, window)


class Peers:
    def __init__(self, bench: Bench) -> None:
        self.bench, self.reactor, self.options = bench, bench.reactor, bench.options

    # -- the servers

    async def mosquitto(self, port: int) -> Process:
        config = Path(self.bench.tmp) / f"mosquitto-{port}.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                          "max_connections -1\nlog_dest none\n")
        server = self.bench.spawn([MOSQUITTO, "-c", str(config)])
        await self.listening(server, port)
        return server

    async def nats(self, port: int) -> Process:
        server = self.bench.spawn([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port)])
        await server.until("Server is ready", 30)
        return server

    async def listening(self, server: Process, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                probe = await connectProtocol(TCP4ClientEndpoint(self.reactor, "127.0.0.1", port), Protocol())
                probe.transport.loseConnection()
                return
            except ConnectError:
                if server.ended.called or time.monotonic() > deadline:
                    raise RuntimeError(f"nothing listens on {port}:\n{server.output[-2000:]}")
                await task.deferLater(self.reactor, 0.05, lambda: None)

    async def hub(self) -> tuple[Process, int, str]:
        devices, http, frontend, backend, events = free_ports(5)
        frontend = f"tcp://127.0.0.1:{frontend}"
        hub = await self.bench.hub("broker,node,api", devices=f"tcp:{devices}:interface=127.0.0.1",
                                   http=f"tcp:{http}:interface=127.0.0.1", frontend=frontend,
                                   backend=f"tcp://127.0.0.1:{backend}", events=f"tcp://127.0.0.1:{events}")
        return hub, devices, frontend

    # -- fleets and callers

    async def peerFleet(self, protocol: str, port: int, count: int, source: str, prefix: str) -> Process:
        fleet = self.bench.spawn([sys.executable, str(ROOT / "bench" / "peer_fleet.py"), "--protocol", protocol,
                                  "--port", str(port), "--count", str(count), "--source", source, "--prefix", prefix])
        ready = await reported(fleet, "ready", timeout=600)
        assert ready["ready"] == count, ready
        return fleet

    async def peer(self, name: str, protocol: str, source: str, prefix: str) -> PeerSystem:
        port = free_ports(1)[0]
        server = await (self.mosquitto(port) if name == "mosquitto" else self.nats(port))
        fleet = await self.peerFleet(protocol, port, self.options.peerDevices, source, prefix)
        caller = self.bench.spawn([sys.executable, str(ROOT / "bench" / "peer_caller.py"), "--protocol", protocol,
                                   "--port", str(port), "--prefix", prefix,
                                   "--devices", str(self.options.peerDevices)])
        await reported(caller, "ready", timeout=60)
        return PeerSystem(name, server, fleet, caller)

    async def devicehub(self, relay: str | None = None) -> DemandSystem:
        """devicehub's hub, or bench/relay.py in its place (C{relay}: a name of L{RELAYS}); the same fleet and caller."""
        if relay is not None:
            kind, source = RELAYS[relay]
            devices, frontend = free_ports(2)
            frontend = f"tcp://127.0.0.1:{frontend}"
            hub = await self.bench.relay(devices, frontend, kind)
        else:
            hub, devices, frontend = await self.hub()
            source = "127.0.7.4"
        prefix = "r-" if relay else "g-"
        fleet, _ = await self.bench.fleet(devices, self.options.peerDevices, source, prefix, each_write=True)
        return DemandSystem(self.bench, hub, fleet, frontend, [f"{prefix}{i:06}" for i in range(self.options.peerDevices)],
                            relay or "devicehub")

    # -- the scenario

    async def commands(self) -> dict:
        """Every system up at once; their runs take turns, so that the machine's drift touches them alike."""
        options = self.options
        systems = [await self.peer("mosquitto", "mqtt", "127.0.7.2", "m-"),
                   await self.peer("nats", "nats", "127.0.7.3", "n-"),
                   await self.devicehub(),
                   *[await self.devicehub(relay) for relay in RELAYS]]
        try:
            for system in systems:
                await system.run(options.peerWarmUp, options.peerWindow)
                await system.run(options.peerWarmUp // 10, 1)
            windows = {system.name: [] for system in systems}
            singles = {system.name: [] for system in systems}
            for _ in range(options.repeats):
                for system in systems:
                    figure = await system.measured(options.peerCommands, options.peerWindow)
                    windows[system.name].append(figure)
                    single = await system.measured(options.peerSequential, 1)
                    singles[system.name].append(single)
                    progress(f"g: {system.name}: {figure['per_s']} acked/s with {options.peerWindow} in flight "
                             f"(p50 {figure['p50_ms']} ms, p99 {figure['p99_ms']} ms), one at a time p50 "
                             f"{single['p50_ms']} ms; CPU per command: server {figure['server_cpu_us_per_command']} "
                             f"us, fleet {figure['fleet_cpu_us_per_command']} us, "
                             f"caller {figure['caller_cpu_us_per_command']} us")
        finally:
            for system in systems:
                if isinstance(system, DemandSystem):
                    system.demand.close()
            await self.bench.stopAll()
        cpu = ("server_cpu_us_per_command", "fleet_cpu_us_per_command", "caller_cpu_us_per_command")
        return {name: {"window": median(windows[name], "per_s", "p50_ms", "p99_ms", *cpu),
                       "one_at_a_time": median(singles[name], "p50_ms", "p99_ms", *cpu)}
                for name in windows}

    async def memory(self, name: str) -> dict:
        """The median of C{options.repeats} runs of L{memoryOnce} (RSS moves by ~0.1 KiB a device between runs)."""
        runs = [await self.memoryOnce(name, run) for run in range(self.options.repeats)]
        runs.sort(key=lambda figure: figure["kib_per_device"])
        return {**runs[len(runs) // 2], "runs_kib_per_device": [figure["kib_per_device"] for figure in runs]}

    async def memoryOnce(self, name: str, run: int = 0) -> dict:
        """The server's RSS growth per idle device, once C{options.peerIdle} are connected and subscribed."""
        count = self.options.peerIdle
        if name == "devicehub":
            server, devices, _ = await self.hub()
        else:
            port = free_ports(1)[0]
            server = await (self.mosquitto(port) if name == "mosquitto" else self.nats(port))
        await task.deferLater(self.reactor, 0.5, lambda: None)
        base = server.rss_kib()
        # A source address of its own: the ports of the fleet before stay in TIME_WAIT for a minute.
        source = f"127.0.7.{5 + SYSTEMS.index(name) + len(SYSTEMS) * run}"
        if name == "devicehub":
            await self.bench.fleet(devices, count, source, "i-")
        else:
            await self.peerFleet("mqtt" if name == "mosquitto" else "nats", port, count, source, "i-")
        await task.deferLater(self.reactor, 1, lambda: None)  # as scenario a: what the logins left settles
        rss = server.rss_kib()
        await self.bench.stopAll()
        figure = {"devices": count, "rss_base_kib": base, "rss_kib": rss,
                  "kib_per_device": round((rss - base) / count, 2)}
        progress(f"g: {name}: {count} idle devices, {figure['kib_per_device']} KiB each "
                 f"({base} KiB -> {rss} KiB)")
        return figure

    async def floor(self) -> dict:
        """The transports' round trips between two Python processes, doing nothing else (bench/floor.py)."""
        process = self.bench.spawn([sys.executable, str(ROOT / "bench" / "floor.py"),
                                    "--count", str(self.options.floorRoundTrips)])
        await process.ended
        self.bench.processes.remove(process)
        figure = json.loads(process.output.strip().splitlines()[-1])
        progress(f"g: the transports' floor: TCP round trip p50 {figure['tcp']['p50_ms']} ms, ZeroMQ "
                 f"{figure['zmq']['p50_ms']} ms: one command at a time can be no faster than "
                 f"{figure['devicehub_floor_ms']} ms in devicehub, {figure['peers_floor_ms']} ms in its peers")
        return figure

    async def run(self) -> dict:
        result = await self.commands()
        for name in SYSTEMS:
            result[name]["memory"] = await self.memory(name)
        result["transport_floor"] = await self.floor()
        result["load_average"] = os.getloadavg()
        result["ratios"] = ratios(result)
        return result


def ratios(result: dict) -> dict:
    """devicehub's figures over each peer's, and the issue's targets as measured (never assumed)."""
    ratio = lambda a, b: round(a / b, 3) if b else None  # noqa: E731 (CPU is read in 10 ms ticks)
    hub = result["devicehub"]
    figures = {}
    for peer in ("mosquitto", "nats"):
        theirs = result[peer]
        figures[f"rate_vs_{peer}"] = ratio(hub["window"]["per_s"], theirs["window"]["per_s"])
        figures[f"p50_one_at_a_time_vs_{peer}"] = ratio(hub["one_at_a_time"]["p50_ms"], theirs["one_at_a_time"]["p50_ms"])
        figures[f"memory_per_device_vs_{peer}"] = ratio(hub["memory"]["kib_per_device"], theirs["memory"]["kib_per_device"])
        figures[f"server_cpu_per_command_vs_{peer}"] = ratio(hub["window"]["median_server_cpu_us_per_command"],
                                                             theirs["window"]["median_server_cpu_us_per_command"])
    figures["cpu_us_per_command_window"] = {  # each the median of the runs
        name: {role: result[name]["window"][f"median_{role}_cpu_us_per_command"] for role in ("server", "fleet", "caller")}
        for name in (*SYSTEMS, *RELAYS)}
    hub_cpu, demand_cpu = (figures["cpu_us_per_command_window"]["devicehub"][role] for role in ("server", "caller"))
    rate, p50, memory = (figures[key] for key in ("rate_vs_mosquitto", "p50_one_at_a_time_vs_mosquitto",
                                                  "memory_per_device_vs_mosquitto"))
    figures["targets"] = {
        "rate_at_least_1_2x_mosquitto": rate is not None and rate >= TARGETS["rate_at_least_1_2x_mosquitto"],
        "p50_at_most_1_5x_mosquitto": p50 is not None and p50 <= TARGETS["p50_at_most_1_5x_mosquitto"],
        "hub_cpu_at_most_25_us": hub_cpu <= TARGETS["hub_cpu_at_most_25_us"],
        "demand_cpu_at_most_15_us": demand_cpu <= TARGETS["demand_cpu_at_most_15_us"],
        "memory_at_most_1_2x_mosquitto": memory is not None and memory <= TARGETS["memory_at_most_1_2x_mosquitto"],
    }
    figures["target_limits"] = TARGETS
    floor = result["transport_floor"]
    # What the p50 target leaves devicehub's processes, once its transports took their floor.
    figures["p50_floor_vs_mosquitto"] = ratio(floor["devicehub_floor_ms"], result["mosquitto"]["one_at_a_time"]["p50_ms"])
    # The same for the CPU and for one at a time: what a relay with these transports spends, bare
    # (relay), on Twisted (relay_twisted) and with a Deferred and a deadline per command (relay_deferred).
    mosquitto = result["mosquitto"]
    for name in RELAYS:
        relay = result[name]
        figures[f"{name}_server_cpu_vs_mosquitto"] = ratio(relay["window"]["median_server_cpu_us_per_command"],
                                                           mosquitto["window"]["median_server_cpu_us_per_command"])
        figures[f"{name}_p50_one_at_a_time_vs_mosquitto"] = ratio(relay["one_at_a_time"]["p50_ms"],
                                                                  mosquitto["one_at_a_time"]["p50_ms"])
        figures[f"hub_cpu_vs_{name}"] = ratio(hub_cpu, relay["window"]["median_server_cpu_us_per_command"])
        figures[f"p50_one_at_a_time_vs_{name}"] = ratio(hub["one_at_a_time"]["p50_ms"], relay["one_at_a_time"]["p50_ms"])
    return figures


async def main(reactor, options) -> None:
    tune_garbage_collector()
    bench = Bench(reactor, options)
    try:
        result = await Peers(bench).run()
    finally:
        await bench.stopAll()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="tiny numbers: checks that the scenario works")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each figure (default 3, 1 with --quick)")
    options = parser.parse_args()
    configure(options, options.quick)
    if options.repeats is None:
        options.repeats = 1 if options.quick else 3
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))
