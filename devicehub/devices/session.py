"""
The session every device connection runs, whatever protocol its codec speaks.

A L{DeviceSession} owns what is common to every protocol: the login and idle
timeouts, who may log in (through its L{SessionController}, the node), the
bad-frame budget, the commands waiting for an answer and their timeouts,
backpressure from a device that stops reading, and how much of a flood one
connection may handle per reactor turn. Its L{Codec} only turns bytes into
messages and commands into bytes (see L{devicehub.devices.codec}).

The session is the Twisted protocol and dispatches the codec's messages; its
parts do the rest: L{Intake} (bytes to messages, a bounded number per turn),
L{PendingCommands} (numbers, lanes, answers, timeouts), L{Outgoing} (writes and
backpressure), L{BadFrameBudget}, and L{LoginStep} (the login, and its IMEI and token checks).

Limits (L{DeviceSettings}): more than C{maxBadLines} bad frames within
L{BAD_LINE_WINDOW} seconds close the connection ("too many errors"); a device that
stops reading is cut off once C{maxOutgoing} bytes wait for it beyond the transport's
own buffer; with a C{secret}, a login of a protocol that carries tokens must carry
C{token} = hex HMAC-SHA256(secret, imei) (L{device_token}).
"""

from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from zope.interface import implementer

from devicehub.common.deadlines import Deadlines, Timeouts
from devicehub.common.logs import peerName
from devicehub.common.results import Reply
from devicehub.devices.budget import BAD_LINE_WINDOW, BadFrameBudget
from devicehub.devices.codec import Answer, BadFrame, Codec, Heartbeat, Identify, Uplink
from devicehub.devices.codec import Reply as ReplyBytes
from devicehub.devices.commands import MAX_IDENT, PendingCommands
from devicehub.devices.intake import FEED_BYTES, LINES_PER_TURN, Intake
from devicehub.devices.login import LoginStep, device_token, deviceLog
from devicehub.devices.outgoing import Outgoing
from devicehub.devices.settings import DeviceSettings

__all__ = [
    "BAD_LINE_WINDOW", "FEED_BYTES", "LINES_PER_TURN", "MAX_IDENT", "SESSION_ERROR_KINDS",
    "DeviceFactory", "DeviceSession", "DeviceSettings", "SessionController", "device_token",
]

log = Logger()

# The kinds of refused frames or connections the session counts for every protocol
# (devicehub_protocol_errors_total), besides its codec's own L{Codec.errorKinds}.
SESSION_ERROR_KINDS = (
    "already logged in", "login first", "invalid imei", "invalid token", "login timeout", "idle timeout",
    "too many errors", "node full", "logins full", "stopped reading", "not allowed",
)


class SessionController(Protocol):
    """What a session reports to (the node), as twisted.names' DNSProtocol reports to its controller."""

    def admit(self, session: "DeviceSession", imei: str) -> tuple[int, str] | None:
        """
        None when C{imei} may log in now, else why not: C{(status, error)}, C{status} 0 for
        a refusal the device is not told as a login answer ("node full").
        """

    def attach(self, session: "DeviceSession") -> None:
        """The device logged in."""

    def detach(self, session: "DeviceSession", reason: str) -> None:
        """A logged-in connection closed, for C{reason} ("closed" when the device closed it)."""

    def uplink(self, imei: str, message: dict[str, Any]) -> None:
        """The device said something on its own: C{message} has its C{type} and data."""

    def protocolError(self, protocol: str, kind: str) -> None:
        """A frame or connection of C{protocol} was refused, counted by C{kind}."""

    def counted(self, protocol: str, connections: int = 0, frames: int = 0) -> None:
        """Connections accepted and frames decoded, for the metrics."""


@implementer(IPushProducer)
class DeviceSession(LoginStep, TwistedProtocol):
    """One device connection: login, heartbeats, commands and their answers."""

    imei: str | None = None
    conn: int | None = None
    """The node's number for this connection, set at login."""
    since: float | None = None
    """When the device logged in (the node's clock), set at login."""
    closeReason: str | None = None
    """Why the hub closed the connection (its error), if it did."""

    def __init__(self, controller: SessionController, codec: Codec, clock, settings: DeviceSettings,
                 deadlines: Deadlines | None = None, timeouts: "Timeouts[DeviceSession] | None" = None) -> None:
        self.node = controller
        self.codec = codec
        self.protocol = codec.name
        self.clock = clock
        self.settings = settings
        self._tokens = getattr(codec, "tokens", False)
        self._strict = getattr(codec, "strict", False)
        self._outgoing = Outgoing(settings.maxOutgoing, self)
        self._intake = Intake(codec, clock, self)
        self._deadlines = deadlines if deadlines is not None else Deadlines(clock)
        self._timeouts = timeouts if timeouts is not None else Timeouts(clock, DeviceSession.timeoutConnection)
        self._pending: PendingCommands | None = None  # made for the first command
        self._badFrames: BadFrameBudget | None = None  # made at the first bad frame
        self._closeWaiters: list[Deferred[None]] | None = None
        self._refused = False
        # Every attribute a session ever gets, set here in one order: then every session's
        # attributes share the class's keys, 1.4 KiB less per connection than the dict a
        # session grew when the node or Twisted added one later.
        self.factory: DeviceFactory | None = None
        self.connected = 0
        self.transport = None
        self.imei = None
        self.conn = None
        self.since = None
        self.closeReason = None

    @property
    def pending(self) -> PendingCommands:
        """The commands waiting for this device's answer (made with the first: an idle device has none, 104 bytes less)."""
        if self._pending is None:
            self._pending = PendingCommands(self.codec, self.clock, self, self._deadlines)
        return self._pending

    @property
    def peer(self) -> str:
        """The device's address, C{host:port} (asked of the transport when logged, not kept)."""
        return "?" if self.transport is None else peerName(self.transport)

    # -- connection lifecycle

    def connectionMade(self) -> None:
        self._outgoing.transport = self._intake.transport = self.transport
        # Connections that have not logged in have a budget of their own, so idle or
        # hostile sockets can never lock real devices out.
        if len(self.factory.loggingIn) >= self.settings.loginBudget:
            self.refuse("too many connections logging in", "logins full")
            return
        self.factory.connections[self] = None
        self.factory.loggingIn.add(self)
        self.node.counted(self.protocol, connections=1)
        deviceLog.info("Device connection from {peer} ({protocol})", peer=self.peer, protocol=self.protocol)
        # Small frames in both directions: without this, Nagle plus the device's delayed
        # ACK can hold a command back ~40 ms behind an unacknowledged answer.
        # (tcp: and ssl: transports both have it; a test transport may not.)
        noDelay = getattr(self.transport, "setTcpNoDelay", None)
        if noDelay is not None:
            noDelay(True)
        self.transport.registerProducer(self, True)
        self.setTimeout(self.settings.loginTimeout)

    def connectionLost(self, reason=None) -> None:
        self.setTimeout(None)
        self._intake.close()
        if self.imei is not None and not self._refused:
            # What was received before the close still counts: an ack among it is an answer.
            self._intake.handle(limit=None)
        self.factory.connections.pop(self, None)
        self.factory.loggingIn.discard(self)
        if self._pending is not None:
            self._pending.close()
        if self.imei is not None:
            reason = self.closeReason or "closed"
            deviceLog.info("{imei} at {peer} is offline: {reason}", imei=self.imei, peer=self.peer, reason=reason)
            self.node.detach(self, reason)
        elif not self._refused:
            deviceLog.info("Connection from {peer} closed before a login", peer=self.peer)
        waiters, self._closeWaiters = self._closeWaiters or (), None
        for waiter in waiters:
            waiter.callback(None)

    @property
    def unanswered(self) -> int:
        """How many commands wait for this device's answer (written or waiting their turn)."""
        return 0 if self._pending is None else len(self._pending)

    def pendingResults(self) -> "list[Deferred[Reply]]":
        """The results of the commands unanswered now (each fires once, answered or timed out)."""
        return [] if self._pending is None else self._pending.results()

    def whenClosed(self) -> "Deferred[None]":
        """Fires once the connection has closed."""
        waiter: Deferred[None] = Deferred()
        if self._closeWaiters is None:
            self._closeWaiters = []
        self._closeWaiters.append(waiter)
        return waiter

    def setTimeout(self, seconds: float | None) -> None:
        """
        Close the connection once C{seconds} pass without a message (None: never), as
        Twisted's C{TimeoutMixin} does, but on the node's shared timer (L{Timeouts}): a
        C{DelayedCall} of its own cost each idle connection ~400 bytes.
        """
        if seconds is None:
            self._timeouts.cancel(self)
        else:
            self._timeouts.set(self, seconds)

    def resetTimeout(self) -> None:
        """A message came: the timeout starts again."""
        self._timeouts.reset(self)

    def timeoutConnection(self) -> None:
        self.refuse("login timeout" if self.imei is None else "idle timeout")

    # -- the transport tells when the device stops reading (IPushProducer)

    def pauseProducing(self) -> None:
        self._outgoing.pause()

    def resumeProducing(self) -> None:
        self._outgoing.resume()

    def stopProducing(self) -> None:
        pass

    def close(self, error: str) -> None:
        """Tell the device why (if its protocol can), then close the connection."""
        if not self.transport.disconnecting:
            self.closeReason = error
            self.write(self.codec.error(error))
            self.transport.loseConnection()

    def refuse(self, error: str, kind: str | None = None) -> None:
        """Close for a protocol error, counting it under C{kind} (default: the error)."""
        if self.imei is None:
            deviceLog.info("Refused the connection from {peer}: {error}", peer=self.peer, error=error)
        else:
            deviceLog.info("Refused {imei} at {peer}: {error}", imei=self.imei, peer=self.peer, error=error)
        self._refused = True
        self._intake.stop()
        self.node.protocolError(self.protocol, kind or error)
        self.close(error)

    # -- frames from the device

    def dataReceived(self, data: bytes) -> None:
        """Bytes from the device: handled now, or in the next reactor turn (L{Intake.receive})."""
        self._intake.receive(data)

    def messagesHandled(self, count: int) -> None:
        """The intake handled C{count} messages."""
        if count:
            self.node.counted(self.protocol, frames=count)
        pending = self._pending
        if pending is not None and pending.waiting and self.mayWriteNext():
            pending.pump()

    def messageReceived(self, message: Any) -> None:
        """Hand a decoded message to its handler (one table for every session, not a dict each)."""
        _HANDLERS[type(message)](self, message)

    def _heartbeat(self, message: Heartbeat) -> None:
        if self._loggedIn():
            self.write(message.reply)
            if message.status is not None:
                self.node.uplink(self.imei, {"type": "status", **message.status})

    def _uplink(self, message: Uplink) -> None:
        if self._loggedIn():
            self.write(message.reply)
            self.node.uplink(self.imei, {"type": message.type, **message.data})

    def _reply(self, message: ReplyBytes) -> None:
        if self._loggedIn():
            self.write(message.reply)

    def _answer(self, message: Answer) -> None:
        if not self._loggedIn():
            return
        if message.reply:  # most protocols' acks want none
            self.write(message.reply)
        pending = self._pending
        if (pending is None or not pending.answer(message.key, message.fallback, message.data)) and (
                message.unmatched is not None):
            self._uplink(message.unmatched)  # a frame of the device's own after all

    def _badFrame(self, message: BadFrame) -> None:
        if message.fatal or (self.imei is None and self._strict):
            self.refuse(message.error, message.kind)
        else:
            self.rejectFrame(message.error, message.kind)

    def rejectFrame(self, error: str, kind: str | None = None) -> None:
        """Count a bad frame (and answer it, if the protocol can); past the budget, close."""
        if self._badFrames is None:
            self._badFrames = BadFrameBudget(self.clock, self.settings.maxBadLines)
        if not self._badFrames.spend():
            self.refuse("too many errors")
        else:
            self.node.protocolError(self.protocol, kind or error)
            self.write(self.codec.error(error))

    # -- commands to the device

    def sendCommand(self, instruct: str, data: Any, timeout: float) -> "Deferred[Reply]":
        """
        Write a command (or, for a protocol that cannot tell commands apart, queue it behind
        the one waiting for its answer); the result fires with the device's answer, or
        TIMEOUT after C{timeout} seconds from now or as soon as the connection closes.

        @raise UnsupportedCommand: the protocol cannot carry this command.
        """
        return self.pending.send(instruct, data, timeout)

    def write(self, data: bytes) -> None:
        """Write to the device, or cut off a device that stopped reading (L{Outgoing.write})."""
        self._outgoing.write(data)

    def mayWriteNext(self) -> bool:
        """Whether a serial codec may take its next command now."""
        # Only once what made it ready was handled (e.g. Teltonika's first ack written).
        return self.codec.ready and not self._intake.waiting

    def notAcked(self, number: int, instruct: str, result: str) -> None:
        """A command ended without an ack (logged)."""
        deviceLog.info("{imei} at {peer}: command {ident} ({instruct!r}) not acked: {result}",
                       imei=self.imei, peer=self.peer, ident=number, instruct=instruct[:80], result=result)

    # (the number given last, which the tests set to try the wrap-around)
    _lastIdent = property(lambda self: self.pending.lastNumber, lambda self, n: setattr(self.pending, "lastNumber", n))

    def stoppedReading(self) -> None:
        """The device stopped reading and too much waits for it: cut it off."""
        deviceLog.warn("{imei} at {peer} stopped reading; closing its connection", imei=self.imei, peer=self.peer)
        self.node.protocolError(self.protocol, "stopped reading")
        self.closeReason = self.closeReason or "stopped reading"
        self.transport.abortConnection()


_HANDLERS: dict[type, Callable[[DeviceSession, Any], None]] = {
    Identify: DeviceSession._identify, Heartbeat: DeviceSession._heartbeat, Answer: DeviceSession._answer,
    Uplink: DeviceSession._uplink, ReplyBytes: DeviceSession._reply, BadFrame: DeviceSession._badFrame,
}


class DeviceFactory(Factory):
    """Builds a L{DeviceSession} speaking C{codec} for each device connection to a node."""

    def __init__(self, node: SessionController, clock, settings: DeviceSettings, codec: type[Codec] | None = None):
        if codec is None:
            from devicehub.devices.codecs.jsonl import JsonLinesCodec as codec
        self.node = node
        self.clock = clock
        self.settings = settings
        self.codec = codec
        self.deadlines = Deadlines(clock)
        """The commands' timeouts, on one timer for all the connections."""
        self.timeouts: Timeouts[DeviceSession] = Timeouts(clock, DeviceSession.timeoutConnection)
        """The connections' login and idle timeouts, on one timer."""
        self.connections: dict[DeviceSession, None] = {}
        """The open connections (a dict as a set: ~30 bytes a connection where a set of 10 000 takes ~100)."""
        self.loggingIn: set[DeviceSession] = set()
        """The connections that have not logged in yet."""

    def closeAll(self, error: str, grace: float) -> "Deferred[None]":
        """
        Tell every connection C{error} and close it; fires when all are closed,
        aborting any still open after C{grace} seconds.
        """
        if not self.connections:
            return succeed(None)
        connections = list(self.connections)
        closed = gatherResults([device.whenClosed() for device in connections])
        for device in connections:
            device.close(error)

        def abort(result: object, timeout: float) -> None:
            for device in list(self.connections):
                device.transport.abortConnection()

        closed.addTimeout(grace, self.clock, onTimeoutCancel=abort)
        return closed

    def buildProtocol(self, addr) -> DeviceSession:
        session = DeviceSession(self.node, self.codec(self.settings.maxLine), self.clock, self.settings, self.deadlines,
                                self.timeouts)
        session.factory = self
        return session
