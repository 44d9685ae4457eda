"""
L{Node}: the node role's domain, the devices connected to this process and the commands sent
to them. Device sessions report to it (it is their L{devicehub.devices.session.SessionController});
it reports presence and uplinks to its L{upstream} (L{devicehub.node.upstreams.Upstreams}, a link
to each broker), and executes each command once however many brokers pass it on (L{Repeats}).
"""

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed

from devicehub.common.drain import allDone
from devicehub.common.metrics import Metrics
from devicehub.common.results import BUSY, NO, OK, REJECTED, Reply
from devicehub.devices.codec import Codec, UnsupportedCommand
from devicehub.devices.session import SESSION_ERROR_KINDS, DeviceSession
from devicehub.node.allowlist import AllowList
from devicehub.node.repeats import Repeats

if TYPE_CHECKING:
    from devicehub.node.upstreams import Upstreams


class Node:
    """The devices connected to this node and the commands sent to them."""

    def __init__(self, name: str, commandTimeout: float, clock, metrics: Metrics) -> None:
        self.name = name
        self.commandTimeout = commandTimeout
        self.clock = clock
        self.metrics = metrics
        self._logins = self.metrics.logins.labels(name)
        self._logouts = self.metrics.logouts.labels(name)
        self._errors: dict[tuple[str, str], Any] = {}
        self._connections: dict[str, Any] = {}
        self.framesDecoded: dict[str, int] = {}
        """Messages decoded from device frames, by protocol (read by the metrics at scrape time)."""
        self.devices: dict[str, DeviceSession] = {}
        self.upstream: "Upstreams | None" = None
        """Told of every device coming online or going offline, and of their uplink messages."""
        self._lastConn = 0
        self.allowList: AllowList | None = None
        """When set, only the identities on it may log in (C{--allow})."""
        self.repeats = Repeats(clock)

    def admit(self, device: DeviceSession, imei: str) -> tuple[int, str] | None:
        """
        Why C{imei} may not log in now (None: it may): it is not on the allow-list, or the
        node is full (unless the device is here already).
        """
        if self.allowList is not None and not self.allowList.allows(imei):
            return 403, "not allowed"
        if imei not in self.devices and len(self.devices) >= device.settings.maxDevices:
            return 0, "node full"
        return None

    def counted(self, protocol: str, connections: int = 0, frames: int = 0) -> None:
        """Connections accepted and frames decoded, for the metrics."""
        if connections:
            counter = self._connections.get(protocol)
            if counter is None:  # labels() is a locked lookup: once per protocol
                counter = self._connections[protocol] = self.metrics.connections.labels(protocol)
            counter.inc(connections)
        if frames:
            self.framesDecoded[protocol] = self.framesDecoded.get(protocol, 0) + frames

    def attach(self, device: DeviceSession) -> None:
        """A device logged in; an older connection with its imei is replaced."""
        imei = device.imei
        older = self.devices.get(imei)
        self._lastConn += 1
        device.conn = self._lastConn
        device.since = self.clock.seconds()
        self.devices[imei] = device
        if older is not None:
            older.close("replaced")
        self._logins.inc()
        self.metrics.protocolLogins.labels(device.protocol).inc()
        if self.upstream is not None:
            self.upstream.online(imei, device.conn, device.since, device.protocol)

    def detach(self, device: DeviceSession, reason: str = "closed") -> None:
        """A logged-in connection closed, for C{reason} ("closed" when the device closed it)."""
        if self.devices.get(device.imei) is device:
            del self.devices[device.imei]
            self._logouts.inc()
            if self.upstream is not None:
                self.upstream.offline(device.imei, device.conn, reason)

    def drop(self, imei: str, conn: int) -> None:
        """The device logged in on another node: close connection C{conn}."""
        device = self.devices.get(imei)
        if device is not None and device.conn == conn:
            device.close("replaced")

    def execute(
        self, imei: str, instruct: str, data: Any, timeout: float | None, wait: bool, request: object = None
    ) -> "Deferred[Reply]":
        """
        Send a command to a device of this node. Fires NO when it is not here,
        BUSY when it has too many unanswered commands, REJECTED (with the reason)
        when its protocol cannot carry the command; with C{wait}, the device's
        ack or TIMEOUT; without, OK once written (or queued behind its predecessor).
        A C{request} named before (its caller moved to another broker) is not
        executed again: it gets the first one's answer.
        """
        if request is None:
            return self._execute(imei, instruct, data, timeout, wait)
        return self.repeats.execute(imei, request, lambda: self._execute(imei, instruct, data, timeout, wait))

    def _execute(self, imei: str, instruct: str, data: Any, timeout: float | None, wait: bool) -> "Deferred[Reply]":
        device = self.devices.get(imei)
        if device is None:
            return succeed(Reply(NO))
        if device.unanswered >= device.settings.maxPending:
            return succeed(Reply(BUSY))
        try:
            acked = device.sendCommand(instruct, data, timeout or self.commandTimeout)
        except UnsupportedCommand as e:
            return succeed(Reply(REJECTED, str(e)))
        return acked if wait else succeed(Reply(OK))

    def speaks(self, codec: type[Codec]) -> None:
        """Devices of C{codec}'s protocol connect to this node: count its errors from 0."""
        for kind in (*SESSION_ERROR_KINDS, *getattr(codec, "errorKinds", ())):
            self._errorCounter(codec.name, kind)

    def protocolError(self, protocol: str, kind: str) -> None:
        """A frame or connection of C{protocol} was refused (counted by kind)."""
        self._errorCounter(protocol, kind).inc()

    def _errorCounter(self, protocol: str, kind: str):
        counter = self._errors.get((protocol, kind))
        if counter is None:  # labels() is a locked lookup: once per kind
            counter = self._errors[protocol, kind] = self.metrics.protocolErrors.labels(protocol, kind)
        return counter

    def uplink(self, imei: str, message: dict[str, Any]) -> None:
        """A device sent a message of its own (any type but login/ping/ack): pass it on as an event."""
        if self.upstream is not None:
            device = self.devices.get(imei)
            self.upstream.uplink(imei, message, self.clock.seconds(), device.protocol if device else None)

    def snapshot(self) -> list[list]:
        """Every online device as C{[imei, conn, since, protocol]}."""
        return [[imei, device.conn, device.since, device.protocol] for imei, device in self.devices.items()]

    def whenAnswered(self) -> "Deferred[None]":
        """Fires once every command unanswered now is answered or has timed out."""
        return allDone(result for device in self.devices.values() for result in device.pendingResults())

    @property
    def unanswered(self) -> int:
        """How many commands wait for an ack on this node."""
        return sum(device.unanswered for device in self.devices.values())
