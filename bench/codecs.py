"""
CPU per frame of each codec, in one process, no I/O: `python bench/codecs.py [--rounds 5] [--only watch,teltonika]`.

For each protocol, the frames of devicehub.devices.simulate's models (what the bench's
fleets send):

  feed      C{codec.feed} of 32 positions in one chunk, per frame (the decoding alone)
  session   the same bytes through a C{DeviceSession} on a StringTransport, its events
            turned into JSON as the broker publishes them, per frame (decoding, dispatch,
            acks written, events)
  command   one command end to end in the session, per command: written, answered by the
            model (a watch's C{CR}: its reply frame and a position), the answer decoded
            and matched (JSON Lines C{0x10}, watch C{CR} and C{UPLOAD,600}, GT06
            C{Relay,1#}, Teltonika C{getinfo})

Prints one line per figure: the best of --rounds, in microseconds of this process's CPU
(process_time: other processes on the machine slow it down less than they do wall time),
and the ratio to JSON Lines. Run it with PYTHONPATH set to another checkout
to measure that one (it imports devicehub from sys.path, the repository first otherwise).
"""

import argparse
import os
import random
import sys
import time
import timeit
from pathlib import Path

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from devicehub.common.jsoncodec import dumps  # noqa: E402
from devicehub.common.metrics import Metrics  # noqa: E402
from devicehub.devices.codecs import load  # noqa: E402
from devicehub.devices.session import DeviceFactory, DeviceSettings  # noqa: E402
from devicehub.devices.simulate import model  # noqa: E402
from devicehub.node.node import Node  # noqa: E402

PROTOCOLS = ("jsonl", "watch", "gt06", "teltonika")
COMMANDS = {"jsonl": [("0x10", None)], "watch": [("CR", None), ("UPLOAD", "600")], "gt06": [("Relay,1#", None)],
            "teltonika": [("getinfo", None)]}
IMEI = "860000000000001"
POOL = 32


class Publishing(Node):
    """A node that turns each event into the JSON the broker would publish, and drops it."""

    def __init__(self, clock) -> None:
        super().__init__("bench", commandTimeout=10.0, clock=clock, metrics=Metrics())
        self.events = 0

    def uplink(self, imei, message) -> None:
        dumps({"imei": imei, "node": self.name, "type": message["type"], "data": message, "ts": 0.0, "n": 1})
        self.events += 1


def positions(device, count: int = POOL) -> bytes:
    random.seed(1)
    lat, lon = 52.37, 4.89
    out = []
    for _ in range(count):
        lat, lon = lat + random.uniform(-0.001, 0.001), lon + random.uniform(-0.001, 0.001)
        out.append(device.position(lat, lon, speed=random.uniform(0, 60), course=random.uniform(0, 360)))
    return b"".join(out)


def identifiedCodec(protocol: str):
    codec = load(protocol)(65536)
    device = model(protocol)(IMEI)
    codec.feed(device.hello())
    return codec, device


def connected(protocol: str):
    """A logged-in session of C{protocol}, its device model and transport."""
    clock = Clock()
    node = Publishing(clock)
    factory = DeviceFactory(node, clock, DeviceSettings(), load(protocol))
    session = factory.buildProtocol(None)
    transport = StringTransport()
    session.makeConnection(transport)
    device = model(protocol)(IMEI)
    session.dataReceived(device.hello())
    device.feed(transport.value())
    transport.clear()
    session.dataReceived(device.position(52.37, 4.89))  # Teltonika takes commands once a packet was acked
    device.feed(transport.value())
    transport.clear()
    assert session.imei == IMEI, protocol
    return session, device, transport, node


def best(stmt, number: int, rounds: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=rounds, timer=time.process_time)) / number


def feedFigure(protocol: str, rounds: int) -> float:
    codec, device = identifiedCodec(protocol)
    data = positions(device)
    assert len([m for m in codec.feed(data) if type(m).__name__ == "Uplink"]) == POOL, protocol
    return best(lambda: codec.feed(data), 200, rounds) / POOL * 1e6


def sessionFigure(protocol: str, rounds: int) -> float:
    session, device, transport, node = connected(protocol)
    data = positions(device)

    def once():
        session.dataReceived(data)
        transport.clear()

    before = node.events
    once()
    assert node.events - before == POOL, (protocol, node.events - before)
    return best(once, 100, rounds) / POOL * 1e6


def commandFigure(protocol: str, instruct: str, data, rounds: int, number: int = 500) -> float:
    """Per command, without the time the device model takes to build its answers."""
    session, device, transport, node = connected(protocol)
    results = []
    clock = time.process_time

    def once() -> float:
        session.sendCommand(instruct, data, 10.0).addCallback(results.append)
        started = clock()
        answers = device.feed(transport.value())
        modelled = clock() - started
        transport.clear()
        for answer in answers:
            session.dataReceived(answer)
        transport.clear()
        return modelled

    once()
    assert results and results[-1].result == "ok", (protocol, instruct, results)
    figures = []
    for _ in range(rounds):
        started = clock()
        modelled = sum(once() for _ in range(number))
        figures.append((clock() - started - modelled) / number)
    return min(figures) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(PROTOCOLS), help="protocols, comma-separated (JSON Lines is always measured)")
    options = parser.parse_args()
    only = ["jsonl"] + [p for p in options.only.split(",") if p != "jsonl"]
    import devicehub
    print(f"devicehub from {Path(devicehub.__file__).parent}; load {os.getloadavg()[0]:.2f}")
    base = {}
    for protocol in only:
        rows = [("feed", feedFigure(protocol, options.rounds)), ("session", sessionFigure(protocol, options.rounds))]
        rows += [(f"command {c}{',' + d if d else ''}", commandFigure(protocol, c, d, options.rounds))
                 for c, d in COMMANDS[protocol]]
        for what, us in rows:
            key = what if not what.startswith("command") else "command"
            base.setdefault(key, us) if protocol == "jsonl" else None
            print(f"{protocol:10} {what:20} {us:7.2f} us  ({us / base[key]:.2f}x jsonl)")


if __name__ == "__main__":
    main()
