"""
A fleet of simulated devices of one protocol, driven from stdin (bench/run.py's scenario f):
`python bench/protocol_fleet.py --protocol gt06 --port 5023 --count 2000 --source 127.0.0.3`.

The devices are devicehub.devices.simulate's models (the frames real devices send, and their
answers to commands) over real TCP connections from SOURCE. It prints one JSON line per
step, and takes these lines on stdin (it exits when stdin closes):

  login            connect COUNT devices, in batches of --batch, each sending its protocol's
                   hello; {"ready": N, "login_per_s": R} once the hub has answered every login
  report           every device sends one position (a Teltonika device needs one acked
                   before it takes commands); {"reported": N}
  flood D F        the first D devices send F positions each (rounded to a multiple of 32)
                   as fast as their connections take them, then a heartbeat; once the hub
                   has answered them all (so decoded every frame):
                   {"flooded": FRAMES, "devices": D, "seconds": S, "prepared_s": P}
                   (S from the first frame sent; P building the positions before)

Every command the hub sends is answered by the model, as its devices do.
"""

import argparse
import json
import random
import sys
import time

from twisted.internet import defer, stdio, task
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from devicehub.tap import tune_garbage_collector  # bench/run.py puts the repository on PYTHONPATH
from devicehub.devices.simulate import model
from devicehub.devices.simulate.fleet import HOME, imeis
from fleet import connectInBatches  # bench/fleet.py

POOL = 32
"""Positions built ahead for each flooding device, sent again and again (the fleet shares the CPUs it measures)."""


def answered(protocol: str, device, data: bytes) -> bool:
    """Whether the hub has answered C{device}'s login (C{data}: what it just sent)."""
    if protocol == "jsonl":
        return b'"status":200' in data
    if protocol == "watch":
        return any(ack.startswith("LK") for ack in device.acks)
    if protocol == "gt06":
        return any(proto == 0x01 for proto, _ in device.acks)
    return device.accepted is True  # teltonika


def caughtUp(protocol: str, device: "Device") -> bool:
    """Whether the hub has decoded every frame of C{device}'s flood (its last one is answered)."""
    if protocol == "jsonl":
        return b'"type":"pong"' in device.tail
    if protocol == "watch":
        return any(ack.startswith("LK") for ack in device.model.acks)
    if protocol == "gt06":
        return any(proto == 0x13 for proto, _ in device.model.acks)
    device.acked += sum(device.model.acks)  # teltonika: every packet's record count is acked
    device.model.acks.clear()
    return device.acked >= device.flooded


@implementer(IPushProducer)
class Device(Protocol):
    """One simulated device: its model's hello at connect, the model's answers to what the hub sends."""

    def __init__(self, protocol: str, imei: str) -> None:
        self.protocol = protocol
        self.model = model(protocol)(imei)
        self.loggedIn: defer.Deferred = defer.Deferred()
        self.position = (HOME[0] + random.uniform(-0.05, 0.05), HOME[1] + random.uniform(-0.05, 0.05))
        self.pool = b""
        self.remaining = self.flooded = self.acked = 0
        self.paused = False
        self.decoded: defer.Deferred | None = None
        self.tail = b""

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.transport.write(self.model.hello())

    def dataReceived(self, data: bytes) -> None:
        for answer in self.model.feed(data):
            self.transport.write(answer)
        if not self.loggedIn.called:
            if answered(self.protocol, self.model, data):
                self.loggedIn.callback(None)
            return
        if self.decoded is not None:
            self.tail = (self.tail + data)[-64:]
            if caughtUp(self.protocol, self):
                decoded, self.decoded = self.decoded, None
                decoded.callback(None)
        # What the model records (acks, commands answered): nobody reads it here.
        getattr(self.model, "acks", []).clear()
        self.model.commands.clear()

    def report(self) -> None:
        self.transport.write(self.model.position(*self.position, speed=30.0, course=90.0))

    def prepare(self) -> None:
        """Build the positions of L{flood} ahead (the fleet shares the CPUs it measures)."""
        if not self.pool:
            lat, lon = self.position
            pool = []
            for _ in range(POOL):
                lat, lon = lat + random.uniform(-0.001, 0.001), lon + random.uniform(-0.001, 0.001)
                pool.append(self.model.position(lat, lon, speed=random.uniform(0, 60), course=random.uniform(0, 360)))
            self.pool = b"".join(pool)
            self.transport.registerProducer(self, True)

    def flood(self, frames: int) -> defer.Deferred:
        """
        Write C{frames} positions (a multiple of L{POOL}) whenever the connection's buffer
        has room (a streaming producer), then a heartbeat; fires once the hub has answered
        it (Teltonika: acked every record), i.e. decoded them all.
        """
        self.prepare()
        self.remaining = self.flooded = frames
        self.acked = 0
        self.tail = b""
        self.decoded = defer.Deferred()
        self.resumeProducing()
        return self.decoded

    def resumeProducing(self) -> None:
        self.paused = False
        while self.remaining and not self.paused:  # write() pauses us once Twisted's buffer is full
            self.transport.write(self.pool)
            self.remaining -= POOL
            if not self.remaining and self.protocol != "teltonika":  # its keep-alive gets no answer
                self.transport.write(self.model.heartbeat())

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.remaining = 0

    def connectionLost(self, reason=None) -> None:
        self.remaining = 0
        if not self.loggedIn.called:
            self.loggedIn.errback(reason)
        if self.decoded is not None:
            self.decoded.errback(reason)


class Control(LineOnlyReceiver):
    """The bench's orders on stdin; the fleet ends when stdin closes."""

    delimiter = b"\n"

    def __init__(self, reactor, options) -> None:
        self.reactor = reactor
        self.options = options
        self.devices: list[Device] = []
        self.ended: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.say(loaded=True)

    def say(self, **figures) -> None:
        sys.stdout.write(json.dumps(figures) + "\n")
        sys.stdout.flush()

    def lineReceived(self, line: bytes) -> None:
        order, *arguments = line.decode().split()
        run = {"login": self.login, "report": self.report, "flood": self.flood}[order]
        defer.ensureDeferred(run(*arguments)).addErrback(self.failed)

    def failed(self, failure) -> None:
        self.say(error=failure.getErrorMessage())
        self.ended.callback(None)

    async def login(self) -> None:
        options = self.options
        identities = imeis(options.count, options.prefix)
        started = time.perf_counter()
        devices = [Device(options.protocol, imei) for imei in identities]
        await connectInBatches(self.reactor, devices, options, lambda device: device.loggedIn)
        self.devices += devices
        self.say(ready=len(self.devices), login_per_s=round(len(self.devices) / (time.perf_counter() - started)))

    async def report(self) -> None:
        for device in self.devices:
            device.report()
        self.say(reported=len(self.devices))

    async def flood(self, count: str, frames: str) -> None:
        flooding = self.devices[:int(count)]
        each = max(1, int(frames) // POOL) * POOL
        started = time.perf_counter()
        for device in flooding:
            device.prepare()
        prepared = time.perf_counter()
        await defer.gatherResults([device.flood(each) for device in flooding])
        elapsed = time.perf_counter() - prepared
        self.say(flooded=each * len(flooding), devices=len(flooding), seconds=round(elapsed, 4),
                 prepared_s=round(prepared - started, 4))

    def connectionLost(self, reason=None) -> None:
        if not self.ended.called:
            self.ended.callback(None)


async def main(reactor, options) -> None:
    tune_garbage_collector()  # as twistd devicehub does: the fleet shares the CPUs it measures
    control = Control(reactor, options)
    stdio.StandardIO(control, reactor=reactor)
    await control.ended
    for device in control.devices:
        device.transport.abortConnection()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--protocol", required=True, choices=["jsonl", "watch", "gt06", "teltonika"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--source", default="127.0.0.1", help="source address of the connections")
    parser.add_argument("--prefix", default="86000000", help="identities: PREFIX and digits, 15 characters")
    parser.add_argument("--batch", type=int, default=250, help="connections opened at once")
    sys.exit(task.react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args()))))
