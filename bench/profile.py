"""
Where the CPU goes per command: `python bench/profile.py [--commands 60000] [--runs 3] [--sequential|--http] [--relay [epoll|twisted|deferred]] [--spy hub|fleet|generator]`.

Starts `twistd devicehub` (all roles in one process) and a fleet of --devices (1 000) devices, keeps a
window of Demand calls in flight (--window, 200) (or, with --sequential, one at a time; with --http,
wrk's 50 HTTP POSTs with wait for 10 s), and prints for each run the acked commands/s and
the CPU microseconds per command of the hub, the fleet and this load generator (user +
system, all threads, from /proc). With --relay, bench/relay.py (no devicehub) takes the
hub's place: the floor of a Python hub on the same transports (`--relay twisted`: on Twisted
and txZMQ; `--relay deferred`: also a Deferred and a deadline per command). With --spy, the
last run is also sampled by py-spy (pip install py-spy) into bench/profile-ROLE.txt
(raw collapsed stacks: feed them to a flame graph, or sort them). This is the tool behind
the before/after figures in docs/performance.md; bench/run.py is the full benchmark.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet import defer, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import Bench, progress, stat_cpu  # noqa: E402

from devicehub import Demand  # noqa: E402
from devicehub.tap import tune_garbage_collector  # noqa: E402
from tests.support import free_ports  # noqa: E402


def threads(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of C{pid}, by thread name (ZeroMQ's I/O thread is ZMQbg/IO/0)."""
    seconds: dict[str, float] = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        name, cpu = stat_cpu(stat)
        seconds[name] = seconds.get(name, 0.0) + cpu
    return seconds


async def main(reactor, options) -> None:
    tune_garbage_collector()
    bench = Bench(reactor, options)
    devices, http, frontend, backend, events = free_ports(5)
    if options.relay:
        hub = await bench.relay(devices, f"tcp://127.0.0.1:{frontend}", options.relay)
    else:
        hub = await bench.hub("broker,node,api", devices=f"tcp:{devices}:interface=127.0.0.1",
                              http=f"tcp:{http}:interface=127.0.0.1", frontend=f"tcp://127.0.0.1:{frontend}",
                              backend=f"tcp://127.0.0.1:{backend}", events=f"tcp://127.0.0.1:{events}")
    fleet, _ = await bench.fleet(devices, options.devices, "127.0.0.2", "p-", each_write=True)
    imeis = [f"p-{i:06}" for i in range(options.devices)]
    demand = Demand(f"tcp://127.0.0.1:{frontend}", timeout=30)
    send = lambda i: demand.send(imeis[i % len(imeis)], "0x10", i)  # noqa: E731
    try:
        await bench.windowed(send, 2000, 200)  # warm up
        for run in range(options.runs):
            spy = None
            if options.spy and run == options.runs - 1:
                pid = {"hub": hub.pid, "fleet": fleet.pid, "generator": os.getpid()}[options.spy]
                spy = subprocess.Popen(
                    ["py-spy", "record", "-p", str(pid), "-d", "5", "-r", "500", "-f", "raw",
                     "-o", str(ROOT / "bench" / f"profile-{options.spy}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cpu = hub.cpu_seconds(), fleet.cpu_seconds(), time.process_time()
            hubThreads, ownThreads = threads(hub.pid), threads(os.getpid())
            if options.sequential:
                figure = await bench.sequential(demand, imeis, options.commands)
                commands = options.commands
            elif options.http:
                figure = await bench.wrk(f"http://127.0.0.1:{http}", "p-", len(imeis), 50)
                commands = figure["sent"]
            else:
                figure = await bench.windowed(send, options.commands, options.window)
                commands = options.commands
            used = hub.cpu_seconds() - cpu[0], fleet.cpu_seconds() - cpu[1], time.process_time() - cpu[2]
            hub_us, fleet_us, generator_us = (round(seconds / commands * 1e6, 1) for seconds in used)
            perThread, perOwnThread = ({name: round((seconds - before.get(name, 0.0)) / commands * 1e6, 1)
                                        for name, seconds in threads(pid).items()}
                                       for pid, before in ((hub.pid, hubThreads), (os.getpid(), ownThreads)))
            rate = f"{figure['per_s']} commands/s" if "per_s" in figure else f"p50 {figure['p50_ms']} ms"
            progress(f"run {run + 1}: {rate}; CPU per command: hub {hub_us} us, fleet {fleet_us} us, "
                     f"generator {generator_us} us; the hub's threads: "
                     + ", ".join(f"{name} {us} us" for name, us in perThread.items() if us)
                     + "; the generator's: " + ", ".join(f"{name} {us} us" for name, us in perOwnThread.items() if us))
            if spy is not None:
                spy.wait()
    finally:
        demand.close()
        await bench.stopAll()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--commands", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=200, help="Demand calls in flight")
    parser.add_argument("--devices", type=int, default=1000, help="devices in the fleet, each on its own connection")
    parser.add_argument("--sequential", action="store_true", help="one call at a time instead of a window")
    parser.add_argument("--http", action="store_true", help="HTTP POSTs with wait from wrk instead of Demand calls")
    parser.add_argument("--relay", nargs="?", const="epoll", choices=["epoll", "twisted", "deferred"],
                        help="bench/relay.py (no devicehub: the floor of a Python hub) in the hub's place; "
                             "twisted: on Twisted and txZMQ; deferred: also a Deferred and a deadline per command")
    parser.add_argument("--spy", choices=["hub", "fleet", "generator"], help="sample this process with py-spy in the last run")
    options = parser.parse_args()
    options.seconds = 10 / 3  # Bench.wrk runs for 3 x this: 10 s
    os.chdir(ROOT)
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))
