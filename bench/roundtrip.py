"""
Command round trips through a real hub: `python bench/roundtrip.py [--devices N] [--commands N]`.

Starts `twistd -n devicehub` (all roles, one process) as a subprocess, connects N
acking devices over TCP from this process, then measures, against that hub:
  - Demand, one command at a time: latency percentiles
  - Demand, a window of commands in flight: commands/s
  - HTTP POST /devices/{imei}/commands (wait), one at a time and 50 in flight
Prints one JSON object. The load generator shares this machine with the hub.
"""

import argparse
import json
import os
import signal
import subprocess
import tempfile
import sys
from pathlib import Path

import treq
from twisted.internet import defer, task
from twisted.web.client import Agent, HTTPConnectionPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devicehub import OK, Demand  # noqa: E402
from tests.support import connect, eventually, free_ports  # noqa: E402


def percentiles(samples):
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"p50_ms": round(pick(0.50), 3), "p95_ms": round(pick(0.95), 3), "p99_ms": round(pick(0.99), 3),
            "max_ms": round(ordered[-1] * 1000, 3)}


async def sequential(reactor, call, count):
    samples = []
    for i in range(count):
        started = reactor.seconds()
        await call(i)
        samples.append(reactor.seconds() - started)
    return percentiles(samples)


async def windowed(reactor, call, count, window):
    started = reactor.seconds()
    pending = iter(range(count))

    async def worker():
        for i in pending:
            await call(i)

    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(window)])
    return round(count / (reactor.seconds() - started))


async def main(reactor, options):
    devices_port, http_port, frontend, backend, events = free_ports(5)
    hub = subprocess.Popen(
        [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "-l", os.devnull, "devicehub",
         "--devices", f"tcp:{devices_port}:interface=127.0.0.1", "--http", f"tcp:{http_port}:interface=127.0.0.1",
         "--frontend", f"tcp://127.0.0.1:{frontend}", "--backend", f"tcp://127.0.0.1:{backend}",
         "--events", f"tcp://127.0.0.1:{events}", "--store", os.path.join(tempfile.mkdtemp(), "queue.sqlite3")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    demand = Demand(f"tcp://127.0.0.1:{frontend}", timeout=10)
    pool = HTTPConnectionPool(reactor)
    pool.maxPersistentPerHost = 64
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))
    try:
        await eventually(lambda: _listening(devices_port), timeout=30)
        imeis = [f"bench{i:06}" for i in range(options.devices)]
        devices = [await connect(devices_port, imei) for imei in imeis]
        while await demand.gettotal() < len(imeis):
            await task.deferLater(reactor, 0.05, lambda: None)

        async def send(i):
            assert await demand.send(imeis[i % len(imeis)], "0x10", i) == OK

        async def post(i):
            response = await http.post(
                f"http://127.0.0.1:{http_port}/devices/{imeis[i % len(imeis)]}/commands",
                data=json.dumps({"instruct": "0x10", "data": i}).encode(),
            )
            await response.content()
            assert response.code == 200

        n = options.commands
        await sequential(reactor, send, 200)  # warm up
        results = {
            "devices": len(imeis),
            "demand_sequential": await sequential(reactor, send, n),
            "demand_window_200_per_s": await windowed(reactor, send, n * 5, 200),
            "http_sequential": await sequential(reactor, post, n // 2),
            "http_50_in_flight_per_s": await windowed(reactor, post, n * 2, 50),
        }
        print(json.dumps(results, indent=2))
        for device in devices:
            device.transport.loseConnection()
    finally:
        demand.close()
        await pool.closeCachedConnections()
        hub.send_signal(signal.SIGTERM)
        hub.wait(30)


def _listening(port):
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--commands", type=int, default=2000)
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args())))
