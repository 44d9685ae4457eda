"""
The node role: holds device connections and executes commands on them.

L{Node} is the domain: which device is on which connection, and what a command
does. L{BrokerLink} is the node's DEALER to the broker backend: it registers with
a full snapshot, reports presence changes, heartbeats, and turns the broker's
C{command} messages into L{Node.execute} calls. L{NodeService} runs both with a
device listener.
"""

import secrets
import signal
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

import zmq
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger

from devicehub.wire import frames
from devicehub.node.allowlist import AllowList
from devicehub.wire.curve import clientKeys
from devicehub.common.drain import DEFAULT_DRAIN_TIMEOUT, drain
from devicehub.wire.frames import FrameError, Message
from devicehub.common.listening import ListeningService
from devicehub.common.logs import Throttled
from devicehub.common.metrics import Metrics
from devicehub.devices import codecs
from devicehub.devices.codec import Codec, UnsupportedCommand
from devicehub.devices.session import SESSION_ERROR_KINDS, DeviceFactory, DeviceSession, DeviceSettings
from devicehub.common.results import BUSY, NO, OK, REJECTED, Reply
from devicehub.wire.zmqsocket import ZmqSocket

if TYPE_CHECKING:
    from devicehub.broker.broker import BrokerService

log = Logger()
throttled = Throttled(log)

# Seconds between checks whether the allow-list file changed.
ALLOW_LIST_CHECK = 5.0
# Seconds a clean shutdown waits for devices to take their error line and close.
CLOSE_GRACE = 2.0


class Node:
    """The devices connected to this node and the commands sent to them."""

    def __init__(self, name: str, commandTimeout: float, clock, metrics: Metrics | None = None) -> None:
        self.name = name
        self.commandTimeout = commandTimeout
        self.clock = clock
        self.metrics = metrics or Metrics()
        self._logins = self.metrics.logins.labels(name)
        self._logouts = self.metrics.logouts.labels(name)
        self._errors: dict[tuple[str, str], Any] = {}
        self._connections: dict[str, Any] = {}
        self.framesDecoded: dict[str, int] = {}
        """Messages decoded from device frames, by protocol (read by the metrics at scrape time)."""
        self.devices: dict[str, DeviceSession] = {}
        self.upstream: "BrokerLink | None" = None
        """Told of every device coming online or going offline, and of their uplink messages."""
        self._lastConn = 0
        self.allowList: AllowList | None = None
        """When set, only the identities on it may log in (C{--allow})."""

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
        self, imei: str, instruct: str, data: Any, timeout: float | None, wait: bool
    ) -> "Deferred[Reply]":
        """
        Send a command to a device of this node. Fires NO when it is not here,
        BUSY when it has too many unanswered commands, REJECTED (with the reason)
        when its protocol cannot carry the command; with C{wait}, the device's
        ack or TIMEOUT; without, OK once written (or queued behind its predecessor).
        """
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

    @property
    def unanswered(self) -> int:
        """How many commands wait for an ack on this node."""
        return sum(device.unanswered for device in self.devices.values())


class BrokerLink(Service):
    """
    The node's connection to the broker: over ZeroMQ to its backend, or, when
    the broker runs in this process, through an in-process pipe.
    """

    # Seconds between hello attempts while unregistered, doubling up to the heartbeat.
    firstRetry = 0.05
    # Missed heartbeats after which the broker is taken for gone.
    missedBeats = 3

    def __init__(
        self, node: Node, backend: str, reactor, heartbeat: float = 1.0, curve=None,
        broker: "BrokerService | None" = None,
    ) -> None:
        """@param broker: the broker of this process, to link to in-process (C{backend} is then unused)."""
        self.node = node
        self.backend = backend
        self.curve = curve
        self.broker = broker
        self.reactor = reactor
        self.heartbeat = heartbeat
        self.registered = False
        self.refused: str | None = None
        """Why the broker refused to register this node, while it does."""
        self.instance = secrets.token_hex(8)
        """This process's own id: tells a node from another that has the same name."""
        self.leaving = False
        self._transmit: Callable[[Message], None] | None = None
        self._close: Callable[[], None] | None = None
        self._timer = None
        self._retry = self.firstRetry
        self._lastHeard = 0.0

    def startService(self) -> None:
        super().startService()
        if self.broker is not None:
            pipe = self.broker.connectNode(self.handle)
            self._transmit, self._close = pipe.send, lambda: pipe.close(deliver=True)
        else:
            socket = ZmqSocket(
                self.reactor, zmq.DEALER, self.received, connect=[self.backend], immediate=True, curve=self.curve
            )
            self._transmit = lambda message: socket.sendFrames(message.frames())
            self._close = lambda: socket.shutdown(linger=1.0)  # ZeroMQ's own thread delivers the rest
        self.node.upstream = self
        self._tick()

    def leave(self) -> None:
        """
        Tell the broker this node is going: its devices leave the directory now,
        while results of commands in flight still go through.
        """
        if not self.leaving:
            self.leaving = True
            self.node.upstream = None
            self._send(b"bye", {})

    def stopService(self) -> Deferred | None:
        """Leave, and close the link once what this node sent has gone (or timed out)."""
        super().stopService()
        self.leave()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        closed = self._close()
        self._transmit = self._close = None
        return closed

    # -- to the broker

    def online(self, imei: str, conn: int, since: float, protocol: str = "jsonl") -> None:
        self._send(b"online", {"imei": imei, "conn": conn, "since": since, "protocol": protocol})

    def offline(self, imei: str, conn: int, reason: str = "closed") -> None:
        self._send(b"offline", {"imei": imei, "conn": conn, "reason": reason})

    def uplink(self, imei: str, message: dict[str, Any], ts: float, protocol: str | None = None) -> None:
        body = {"imei": imei, "message": message, "ts": ts}
        if protocol is not None:
            body["protocol"] = protocol
        self._send(b"uplink", body)

    def _send(self, kind: bytes, body: dict[str, Any], rid: bytes = b"") -> None:
        try:
            self._transmit(Message(kind, rid, body))
        except zmq.Again:
            # Not connected (or the broker is not reading): the next hello carries the state.
            self.registered = False
        except zmq.ZMQError as e:
            throttled.warn("Cannot send {kind} to the broker: {error}", kind=kind, error=e)
            self.registered = False

    def _tick(self) -> None:
        now = self.reactor.seconds()
        if self.registered and now - self._lastHeard > self.missedBeats * self.heartbeat:
            log.warn("The broker at {backend} is silent; registering again", backend=self.backend)
            self.registered = False
        if self.registered or self.leaving:
            self._send(b"ping", {})
            delay = self.heartbeat
        else:
            self._send(b"hello", {"node": self.node.name, "instance": self.instance, "devices": self.node.snapshot()})
            delay = self._retry
            self._retry = min(self._retry * 2, self.heartbeat)
        self._timer = self.reactor.callLater(delay, self._tick)

    def _registerAgain(self) -> None:
        self.registered = False
        self._retry = self.firstRetry
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._tick()

    # -- from the broker

    def received(self, raw: list[bytes]) -> None:
        """Handle the frames of one message from the broker."""
        try:
            message = frames.decode(raw)
        except FrameError as e:
            throttled.warn("Dropped a malformed message from the broker: {error}", error=e)
            return
        self.handle(message)

    def handle(self, message: Message) -> None:
        """Handle one decoded message from the broker."""
        if self._transmit is None:
            return  # stopped
        self._lastHeard = self.reactor.seconds()
        kind, body = message.kind, message.body
        if kind == b"command":
            done = self.node.execute(
                body["imei"], body["instruct"], body["data"], body["timeout"], body["wait"]
            )
            done.addCallback(self._answer, message.rid, body["imei"])
        elif kind == b"pong":
            pass
        elif kind == b"drop":
            self.node.drop(body["imei"], body["conn"])
        elif kind == b"welcome":
            if not self.registered:
                log.info("Registered with the broker at {backend}", backend=self.backend)
            self.registered = True
            self.refused = None
            self.heartbeat = body["heartbeat"]
            self._retry = self.firstRetry
        elif kind == b"reset":
            if not self.leaving:  # a leaving node does not come back
                log.info("The broker does not know this node; registering again")
                self._registerAgain()
        elif kind == b"refused":
            if self.refused != body["error"]:
                log.error("The broker at {backend} refused this node: {error}", backend=self.backend, error=body["error"])
            self.refused = body["error"]
            self.registered = False
            self._retry = self.heartbeat  # it may be taken once the other node is gone
        else:
            throttled.warn("Dropped an unexpected {kind} from the broker", kind=kind)

    def _answer(self, reply: Reply, rid: bytes, imei: str) -> None:
        if self._transmit is not None:
            self._send(b"result", {"imei": imei, "result": reply.result, "data": reply.data}, rid)


class NodeService(MultiService):
    """The node role: a device listener and the link to the broker."""

    def __init__(
        self,
        reactor,
        *,
        devices: str | None = None,
        listen: Sequence[tuple[str, str]] = (),
        backend: str,
        name: str,
        commandTimeout: float,
        settings: DeviceSettings,
        drainTimeout: float = DEFAULT_DRAIN_TIMEOUT,
        curveKeys: str | None = None,
        metrics: Metrics | None = None,
        broker: "BrokerService | None" = None,
        allow: "AllowList | str | None" = None,
    ) -> None:
        """
        @param allow: the allow-list (see L{devicehub.node.allowlist}) or its file, or None: any identity.
        @param devices: the endpoint for JSON Lines devices (the same as C{("jsonl", devices)} in C{listen}).
        @param listen: C{(protocol, endpoint)} pairs: a listener each, all feeding this node.
        @param broker: the broker of this process: link to it in-process instead of over ZeroMQ.
        """
        super().__init__()
        self.drainTimeout = drainTimeout
        self.node = Node(name, commandTimeout, reactor, metrics)
        self.allowCheck: TimerService | None = None
        self.factories: list[DeviceFactory] = []
        self.listeners: list[ListeningService] = []
        for protocol, endpoint in ([("jsonl", devices)] if devices is not None else []) + list(listen):
            factory = DeviceFactory(self.node, reactor, settings, codecs.load(protocol))
            self.node.speaks(factory.codec)
            listener = ListeningService(reactor, endpoint, factory, "devices" if protocol == "jsonl" else f"{protocol} devices")
            listener.setServiceParent(self)
            self.factories.append(factory)
            self.listeners.append(listener)
        self.factory, self.listener = self.factories[0], self.listeners[0]
        if allow is not None:
            self.node.allowList = AllowList(allow) if isinstance(allow, str) else allow
            self.allowCheck = TimerService(ALLOW_LIST_CHECK, self.node.allowList.refresh)
            self.allowCheck.clock = reactor
            self.allowCheck.setServiceParent(self)
        curve = None if curveKeys is None else clientKeys(curveKeys)
        self.link = BrokerLink(self.node, backend, reactor, curve=curve, broker=broker)
        self.link.setServiceParent(self)
        self.reactor = reactor

    def startService(self) -> None:
        self.node.metrics.watchNode(self.node)
        allowList = self.node.allowList
        if allowList is not None and threading.current_thread() is threading.main_thread():
            # SIGHUP: read the allow-list again now (the reactor leaves this signal alone).
            signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(allowList.refresh, True))
        super().startService()

    async def _stop(self) -> None:
        self.node.metrics.forget(self.node)
        await gatherResults([listener.stopService() for listener in self.listeners])
        if self.allowCheck is not None:
            await maybeDeferred(self.allowCheck.stopService)
        self.link.leave()
        await drain(self.reactor, lambda: self.node.unanswered, self.drainTimeout)
        await gatherResults([factory.closeAll("shutting down", CLOSE_GRACE) for factory in self.factories])
        await maybeDeferred(self.link.stopService)
        Service.stopService(self)

    def stopService(self) -> Deferred:
        """
        Stop listening and leave the directory; wait (up to the drain timeout) for
        the acks of commands in flight; then close every device politely.
        """
        return Deferred.fromCoroutine(self._stop())
