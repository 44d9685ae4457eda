"""
Failover between two brokers, as callers see it: `python bench/failover.py [--quick] [--out bench/results-failover.json]`.

Two broker processes (`--roles broker`, one shared SQLite file is not allowed: each its
own store), one node process reporting to both, a fleet of simulated JSON Lines devices
(`bench/fleet.py`, each acks after --delay seconds) and one Demand in this process given
both frontends, keeping --window commands in flight to random devices. During the run:

  1. `kill -9` the broker the Demand uses;
  2. start it again, wait until the Demand uses it again (it prefers the first broker);
  3. `kill -STOP` it for --freeze seconds (frozen: its connections stay open), then `-CONT`.

For each event, the calls in flight at it or made in the --after seconds after it: how many,
how long their answers took (p50, p99, max) and how many were not `ok`. A run with no
event gives the baseline. The target (issue 15) is < 2 s p99 for callers.
"""

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

from twisted.internet import defer, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import Bench, machine, percentiles, progress  # noqa: E402  (bench/run.py)

from devicehub import OK, BrokerUnavailable, Demand  # noqa: E402
from tests.support import free_ports  # noqa: E402


class Calls:
    """A window of calls kept in flight; every call's start, latency and outcome."""

    def __init__(self, demand: Demand, imeis: list[str], window: int) -> None:
        self.demand, self.imeis, self.window = demand, imeis, window
        self.records: list[tuple[float, float, object]] = []
        self.running = True

    async def lane(self) -> None:
        while self.running:
            started = time.monotonic()
            try:
                outcome = await self.demand.send(random.choice(self.imeis), "0x10", timeout=5)
            except BrokerUnavailable:
                outcome = "unavailable"
            self.records.append((started, time.monotonic() - started, outcome))

    def start(self) -> None:
        self.done = defer.gatherResults([defer.ensureDeferred(self.lane()) for _ in range(self.window)])

    async def stop(self) -> None:
        self.running = False
        await self.done

    def around(self, at: float, after: float) -> dict:
        """The calls in flight at C{at} or made in the C{after} seconds after it."""
        return self._figures([(took, outcome) for started, took, outcome in self.records if -took < started - at < after])

    def between(self, start: float, end: float) -> dict:
        """The calls made and answered between C{start} and C{end}."""
        return self._figures([(took, outcome) for started, took, outcome in self.records
                              if start <= started and started + took <= end])

    @staticmethod
    def _figures(hit: list[tuple[float, object]]) -> dict:
        return {"calls": len(hit), "not_ok": sum(outcome != OK for _, outcome in hit),
                **percentiles([took for took, _ in hit])}


async def main(reactor, options) -> None:
    bench = Bench(reactor, options)
    ports = free_ports(7)
    frontends = [f"tcp://127.0.0.1:{port}" for port in ports[0:2]]
    backends = [f"tcp://127.0.0.1:{port}" for port in ports[2:4]]
    events = [f"tcp://127.0.0.1:{port}" for port in ports[4:6]]
    devices = ports[6]
    results = {"machine": machine(), "command": " ".join(sys.argv), "options": vars(options).copy()}
    brokers = [None, None]

    async def broker(index: int):
        brokers[index] = await bench.hub("broker", frontend=frontends[index], backend=backends[index],
                                         events=events[index], node_ttl=1)
        return brokers[index]

    try:
        await broker(0)
        await broker(1)
        await bench.hub("node", devices=f"tcp:{devices}:interface=127.0.0.1", backend=",".join(backends))
        _, ready = await bench.fleet(devices, options.devices, "127.0.0.2", "fo-", delay=options.delay)
        imeis = [f"fo-{i:06d}" for i in range(options.devices)]
        demand = Demand(frontends, timeout=5)
        while await demand.gettotal() < options.devices:
            await task.deferLater(reactor, 0.1, lambda: None)
        calls = Calls(demand, imeis, options.window)
        calls.start()
        pause = lambda seconds: task.deferLater(reactor, seconds, lambda: None)  # noqa: E731
        loaded = time.monotonic()
        await pause(options.settle)
        progress("kill -9 the broker in use")
        killed = time.monotonic()
        brokers[0].transport.signalProcess("KILL")
        await brokers[0].ended
        await pause(options.after + 1)
        await broker(0)
        while (await demand.health())["brokers"][frontends[0]] != "ok" or demand._calls.brokers.current != 0:
            await pause(0.1)
        await pause(options.settle)
        progress(f"kill -STOP the broker in use for {options.freeze} s")
        frozen = time.monotonic()
        os.kill(brokers[0].pid, signal.SIGSTOP)
        await pause(options.freeze)
        os.kill(brokers[0].pid, signal.SIGCONT)
        await pause(options.settle)
        await calls.stop()
        results["baseline"] = calls.between(loaded, killed - 0.1)
        results["killed"] = calls.around(killed, options.after)
        results["frozen"] = calls.around(frozen, options.after)
        results["calls"] = len(calls.records)
        results["not_ok_in_all"] = sum(outcome != OK for _, _, outcome in calls.records)
        demand.close()
    finally:
        await bench.stopAll()
    print(json.dumps(results, indent=2))
    if options.out:
        Path(options.out).write_text(json.dumps(results, indent=2) + "\n")
        progress(f"wrote {options.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="small numbers: checks that the benchmark works")
    parser.add_argument("--out", default=None, help="write the figures here too (JSON)")
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--window", type=int, default=100, help="commands in flight")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds each device takes to ack")
    parser.add_argument("--after", type=float, default=2.0, help="seconds after an event whose calls count")
    parser.add_argument("--freeze", type=float, default=4.0)
    parser.add_argument("--settle", type=float, default=3.0)
    options = parser.parse_args()
    if options.quick:
        options.devices, options.window, options.settle, options.freeze = 50, 10, 1.0, 2.0
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))
