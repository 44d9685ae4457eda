"""
Many simulated devices over real connections: C{devicehub simulate}.

Each device connects to the hub's endpoint, identifies and reports its position, then
sends a heartbeat and a position every C{interval} seconds (from a random start within the first interval, so a
fleet does not beat in step), and answers commands as its protocol's devices do.
"""

import random
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall

from devicehub.devices.simulate import model

# Where the simulated fleet drives about (Amsterdam), in degrees.
HOME = (52.3702, 4.8952)


@dataclass
class Tally:
    """What a fleet did, for its summary line."""

    connected: int = 0
    failed: int = 0
    closed: int = 0
    commands: int = 0
    errors: list[str] = field(default_factory=list)


class SimulatedDevice(Protocol):
    """One simulated device on a real connection, driven by its protocol's model."""

    def __init__(self, device: Any, interval: float, clock, tally: Tally) -> None:
        self.device = device
        self.interval = interval
        self.clock = clock
        self.tally = tally
        self.closed: Deferred[None] = Deferred()
        self._beat = LoopingCall(self.beat)
        self._beat.clock = clock
        self._start = None
        self._position = (HOME[0] + random.uniform(-0.05, 0.05), HOME[1] + random.uniform(-0.05, 0.05))

    def connectionMade(self) -> None:
        noDelay = getattr(self.transport, "setTcpNoDelay", None)
        if noDelay is not None:
            noDelay(True)
        self.transport.write(self.device.hello())
        self.transport.write(self.device.position(*self._position))  # trackers report where they are at once
        if self.interval > 0:
            self._start = self.clock.callLater(random.uniform(0, self.interval), self._beat.start, self.interval)

    def beat(self) -> None:
        """A heartbeat and a position a little further along."""
        lat, lon = self._position
        self._position = (lat + random.uniform(-0.001, 0.001), lon + random.uniform(-0.001, 0.001))
        self.transport.write(self.device.heartbeat())
        self.transport.write(self.device.position(*self._position, speed=random.uniform(0, 60),
                                                  course=random.uniform(0, 360)))

    def dataReceived(self, data: bytes) -> None:
        before = len(self.device.commands)
        for answer in self.device.feed(data):
            self.transport.write(answer)
        self.tally.commands += len(self.device.commands) - before

    def connectionLost(self, reason=None) -> None:
        if self._start is not None and self._start.active():
            self._start.cancel()
        if self._beat.running:
            self._beat.stop()
        self.tally.closed += 1
        self.closed.callback(None)


def imeis(count: int, prefix: str = "86000000") -> list[str]:
    """C{count} 15-character identities (numeric with the default prefix, as trackers have)."""
    width = max(1, 15 - len(prefix))
    return [f"{prefix}{index:0{width}d}" for index in range(1, count + 1)]


async def simulate(reactor, protocol: str, count: int, to: str, interval: float = 30.0, silent: bool = False,
                   prefix: str = "86000000", stop: Deferred | None = None) -> Tally:
    """
    Connect C{count} devices of C{protocol} to the client endpoint C{to}; run until
    C{stop} fires (or every device is closed); return the tally.
    """
    tally = Tally()
    Model = model(protocol)
    endpoint = clientFromString(reactor, to)
    devices: list[SimulatedDevice] = []

    async def one(imei: str) -> None:
        try:
            device = SimulatedDevice(Model(imei, silent=silent), interval, reactor, tally)
            await connectProtocol(endpoint, device)
        except Exception as e:  # an identity the protocol cannot carry, refused, unreachable: counted
            tally.failed += 1
            if len(tally.errors) < 5:
                tally.errors.append(f"{imei}: {e}")
            return
        tally.connected += 1
        devices.append(device)

    await DeferredList([Deferred.fromCoroutine(one(imei)) for imei in imeis(count, prefix)])
    everyoneGone = DeferredList([device.closed for device in devices])
    waits = [everyoneGone] if stop is None else [everyoneGone, stop]
    await DeferredList(waits, fireOnOneCallback=True)
    for device in devices:
        device.transport.loseConnection()
    await everyoneGone
    return tally
