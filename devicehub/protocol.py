"""
The device wire protocol: JSON Lines over TCP or TLS (CONTRACT §2).

One JSON object per line, UTF-8, ended by C{\\n} (a C{\\r} before it is
tolerated); every object has a string field C{type}::

    device -> hub   {"type":"login","imei":"861234567890123"}      first line, within login timeout
    hub -> device   {"type":"login","status":200}                  or 400/401 with "error", then close
    device -> hub   {"type":"ping"}                                answered by {"type":"pong"}
    hub -> device   {"type":"command","ident":42,"instruct":"0x10","data":...}
    device -> hub   {"type":"ack","ident":42}  or  {"type":"ack","ident":42,"data":...}
    device -> hub   any other type: an uplink message, handed to the node
    hub -> device   {"type":"error","error":"..."}                 a rejected line; sent before any close

A bad line gets an C{error} line (and a close before login); a line longer than the
limit closes the connection; an ack with an unknown ident is ignored. When the
connection closes, every command still waiting for its ack resolves as TIMEOUT.

Limits (L{DeviceSettings}): more than C{maxBadLines} bad lines within
L{BAD_LINE_WINDOW} seconds close the connection ("too many errors"); a device that
stops reading is cut off once C{maxOutgoing} bytes wait for it beyond the transport's
own buffer; with a C{secret}, a login must carry C{token} = hex HMAC-SHA256(secret, imei).
"""

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from .frames import FrameError, dumps, loads
from .imei import is_valid_imei
from .logs import Throttled, peerName
from .results import OK, TIMEOUT, Reply

if TYPE_CHECKING:
    from .node import Node

log = Logger()
deviceLog = Throttled(log)

MAX_IDENT = 2_147_483_647
BAD_LINE_WINDOW = 60.0
# Every kind of refused line or connection, as counted in devicehub_protocol_errors_total.
ERROR_KINDS = (
    "json", "object", "type", "invalid ident", "already logged in", "login first", "invalid imei",
    "invalid token", "login timeout", "idle timeout", "line too long", "too many errors", "node full",
    "logins full", "stopped reading",
)
# Lines handled per reactor turn for one connection; the rest wait a turn (reading paused),
# so a flooding device cannot hold the reactor for long (64 KiB of pings is ~4 000 lines).
LINES_PER_TURN = 100


@dataclass(frozen=True)
class DeviceSettings:
    """How a node treats device connections (the device options of twistd devicehub)."""

    loginTimeout: float = 30.0
    idleTimeout: float = 300.0
    maxLine: int = 65536
    secret: bytes | None = None
    """When set, logins must carry a token (see L{device_token})."""
    maxDevices: int = 10_000
    """Devices logged in at once; further logins are refused with "node full"."""
    maxLogins: int | None = None
    """Connections not yet logged in at once, on top of C{maxDevices} (default: a tenth of it, at least 16)."""
    maxPending: int = 64
    """Unanswered commands per device; more are refused as busy."""
    maxOutgoing: int = 1 << 20
    """Bytes that may wait for a device that stopped reading before it is cut off."""
    maxBadLines: int = 10
    """Bad lines tolerated within L{BAD_LINE_WINDOW} seconds."""


    @property
    def loginBudget(self) -> int:
        """Connections that may be waiting to log in at once; more are refused."""
        return self.maxLogins if self.maxLogins is not None else max(16, self.maxDevices // 10)


def device_token(secret: bytes | str, imei: str) -> str:
    """The login token of C{imei}: hex HMAC-SHA256 keyed with the node's device secret (UTF-8 if a str)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, imei.encode(), hashlib.sha256).hexdigest()


class LineError(ValueError):
    """A device line that breaks the protocol; its text goes into the error line."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
        """A fixed name for metrics: json, object or type."""


def parse_line(line: bytes) -> dict[str, Any]:
    """
    Decode one device line (without its C{\\n}) into a message.

    @raise LineError: not UTF-8 JSON, not an object, or no valid C{type}.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        message = loads(line)
    except FrameError as e:
        raise LineError(str(e), "json") from None
    if not isinstance(message, dict):
        raise LineError("not a JSON object", "object")
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        raise LineError("missing or invalid type", "type")
    return message


def _timed_out(result: object, timeout: float) -> Reply:
    return Reply(TIMEOUT)


@implementer(IPushProducer)
class DeviceProtocol(LineOnlyReceiver, TimeoutMixin):
    """One device connection: login, heartbeats, commands and their acks."""

    delimiter = b"\n"

    imei: str | None = None
    conn: int | None = None
    """The node's number for this connection, set at login."""
    since: float | None = None
    """When the device logged in (the node's clock), set at login."""
    peer: str = "?"
    """The device's address, C{host:port}."""
    closeReason: str | None = None
    """Why the hub closed the connection (its error line), if it did."""

    def __init__(self, node: "Node", clock, settings: DeviceSettings):
        self.node = node
        self.clock = clock
        self.callLater = clock.callLater  # TimeoutMixin's timer
        self.settings = settings
        self.MAX_LENGTH = settings.maxLine
        self._pending: dict[int, Deferred[Reply]] = {}
        self._lastIdent = 0
        self._closeWaiters: list[Deferred[None]] = []
        self._paused = False
        self._backlog = 0
        self._badLines = 0
        self._badWindowStart = 0.0
        self._nextTurn = None
        self._refused = False

    # -- connection lifecycle

    def connectionMade(self) -> None:
        self.peer = peerName(self.transport)
        # Connections that have not logged in have a budget of their own, so idle or
        # hostile sockets can never lock real devices out.
        if len(self.factory.loggingIn) >= self.settings.loginBudget:
            self.refuse("too many connections logging in", "logins full")
            return
        self.factory.connections.add(self)
        self.factory.loggingIn.add(self)
        deviceLog.info("Device connection from {peer}", peer=self.peer)
        # Small lines in both directions: without this, Nagle plus the device's delayed
        # ACK can hold a command back ~40 ms behind an unacknowledged pong.
        # (tcp: and ssl: transports both have it; a test transport may not.)
        noDelay = getattr(self.transport, "setTcpNoDelay", None)
        if noDelay is not None:
            noDelay(True)
        self.transport.registerProducer(self, True)
        self.setTimeout(self.settings.loginTimeout)

    def connectionLost(self, reason=None) -> None:
        self.setTimeout(None)
        if self._nextTurn is not None and self._nextTurn.active():
            self._nextTurn.cancel()
        if self.imei is not None and not self._refused:
            self._handleReceived()
        self.factory.connections.discard(self)
        self.factory.loggingIn.discard(self)
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.callback(Reply(TIMEOUT))
        if self.imei is not None:
            reason = self.closeReason or "closed"
            deviceLog.info("{imei} at {peer} is offline: {reason}", imei=self.imei, peer=self.peer, reason=reason)
            self.node.detach(self, reason)
        elif not self._refused:
            deviceLog.info("Connection from {peer} closed before a login", peer=self.peer)
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    @property
    def unanswered(self) -> int:
        """How many commands wait for this device's ack."""
        return len(self._pending)

    def whenClosed(self) -> "Deferred[None]":
        """Fires once the connection has closed."""
        waiter: Deferred[None] = Deferred()
        self._closeWaiters.append(waiter)
        return waiter

    def timeoutConnection(self) -> None:
        self.refuse("login timeout" if self.imei is None else "idle timeout")

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse("line too long")

    # -- the transport tells when the device stops reading (IPushProducer)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._backlog = 0

    def stopProducing(self) -> None:
        pass

    def close(self, error: str) -> None:
        """Send an C{error} line, then close the connection."""
        if not self.transport.disconnecting:
            self.closeReason = error
            self.sendMessage({"type": "error", "error": error})
            self.transport.loseConnection()

    def refuse(self, error: str, kind: str | None = None) -> None:
        """Close for a protocol error, counting it under C{kind} (default: the error)."""
        if self.imei is None:
            deviceLog.info("Refused the connection from {peer}: {error}", peer=self.peer, error=error)
        else:
            deviceLog.info("Refused {imei} at {peer}: {error}", imei=self.imei, peer=self.peer, error=error)
        self._refused = True
        self.node.protocolError(kind or error)
        self.close(error)

    # -- lines from the device

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if self._nextTurn is None:
            self._handleLines()

    def _handleLines(self) -> None:
        """Handle up to L{LINES_PER_TURN} buffered lines; leave the rest for the next turn."""
        self._nextTurn = None
        lines = self._buffer.split(self.delimiter, LINES_PER_TURN)
        self._buffer = lines.pop()
        for line in lines:
            if self.transport.disconnecting:
                return
            if len(line) > self.MAX_LENGTH:
                self.lineLengthExceeded(line)
                return
            self.lineReceived(line)
        if self.transport.disconnecting:
            return
        if len(lines) == LINES_PER_TURN and self.delimiter in self._buffer:
            self.transport.pauseProducing()  # stop reading this socket meanwhile
            self._nextTurn = self.clock.callLater(0, self._nextLines)
        elif len(self._buffer) > self.MAX_LENGTH:
            self.lineLengthExceeded(self._buffer)

    def _handleReceived(self) -> None:
        """
        Handle the whole lines still buffered (beyond a turn's budget) when the connection
        closed: they were received, and an ack among them is an answer, not a timeout.
        """
        *lines, self._buffer = self._buffer.split(self.delimiter)
        for line in lines:
            if self._refused or len(line) > self.MAX_LENGTH:
                return
            self.lineReceived(line)

    def _nextLines(self) -> None:
        self.transport.resumeProducing()
        self._handleLines()

    def lineReceived(self, line: bytes) -> None:
        self.resetTimeout()
        try:
            message = parse_line(line)
        except LineError as e:
            self.rejectLine(str(e), e.kind)
            return
        kind = message["type"]
        if self.imei is None:
            if kind == "login":
                self.login(message)
            else:
                self.refuse("login first")
        elif kind == "ack":
            self.acked(message)
        elif kind == "ping":
            self.sendMessage({"type": "pong"})
        elif kind == "login":
            self.rejectLine("already logged in")
        else:
            self.node.uplink(self.imei, message)

    def rejectLine(self, error: str, kind: str | None = None) -> None:
        """
        Answer a bad line; before login, or past the bad-line budget, the
        connection is closed as well.
        """
        now = self.clock.seconds()
        if now - self._badWindowStart > BAD_LINE_WINDOW:
            self._badWindowStart, self._badLines = now, 0
        self._badLines += 1
        if self.imei is None:
            self.refuse(error, kind)
        elif self._badLines > self.settings.maxBadLines:
            self.refuse("too many errors")
        else:
            self.node.protocolError(kind or error)
            self.sendMessage({"type": "error", "error": error})

    def login(self, message: dict[str, Any]) -> None:
        imei = message.get("imei")
        if not is_valid_imei(imei):
            self.refuseLogin(400, "invalid imei", imei)
            return
        secret = self.settings.secret
        if secret is not None:
            token = message.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(
                token.encode(errors="surrogatepass"), device_token(secret, imei).encode()
            ):
                self.refuseLogin(401, "invalid token", imei)
                return
        if len(self.node.devices) >= self.settings.maxDevices and imei not in self.node.devices:
            self.refuse("node full")
            return
        self.imei = imei
        self.factory.loggingIn.discard(self)
        self.setTimeout(self.settings.idleTimeout)
        self.sendMessage({"type": "login", "status": 200})
        deviceLog.info("{imei} logged in from {peer}", imei=imei, peer=self.peer)
        self.node.attach(self)

    def refuseLogin(self, status: int, error: str, imei: object = None) -> None:
        if isinstance(imei, str):
            deviceLog.info("Login as {imei!r} from {peer} refused: {error}", imei=imei[:80], peer=self.peer, error=error)
        self.sendMessage({"type": "login", "status": status, "error": error})
        self.refuse(error)

    def acked(self, message: dict[str, Any]) -> None:
        ident = message.get("ident")
        if not isinstance(ident, int) or isinstance(ident, bool):
            self.rejectLine("invalid ident")
            return
        waiting = self._pending.pop(ident, None)
        if waiting is not None:
            waiting.callback(Reply(OK, message.get("data")))

    # -- commands to the device

    def sendCommand(self, instruct: str, data: Any, timeout: float) -> "Deferred[Reply]":
        """
        Write a command; the result fires with the device's ack, or TIMEOUT
        after C{timeout} seconds or as soon as the connection closes.
        """
        ident = self._nextIdent()
        waiting: Deferred[Reply] = Deferred()
        self._pending[ident] = waiting
        waiting.addTimeout(timeout, self.clock, onTimeoutCancel=_timed_out)
        waiting.addBoth(self._forget, ident, instruct)
        self.sendMessage({"type": "command", "ident": ident, "instruct": instruct, "data": data})
        return waiting

    def _forget(self, result: Reply, ident: int, instruct: str) -> Reply:
        self._pending.pop(ident, None)
        if result.result != OK:  # an ack is the common case, and counted in the metrics
            deviceLog.info("{imei} at {peer}: command {ident} ({instruct!r}) not acked: {result}",
                           imei=self.imei, peer=self.peer, ident=ident, instruct=instruct[:80], result=result.result)
        return result

    def _nextIdent(self) -> int:
        ident = self._lastIdent
        while True:
            ident = ident % MAX_IDENT + 1
            if ident not in self._pending:
                self._lastIdent = ident
                return ident

    def sendMessage(self, message: dict[str, Any]) -> None:
        """Write one JSON line to the device, or cut off a device that stopped reading."""
        line = dumps(message)
        if self._paused:
            self._backlog += len(line) + 1
            if self._backlog > self.settings.maxOutgoing:
                deviceLog.warn("{imei} at {peer} stopped reading; closing its connection", imei=self.imei, peer=self.peer)
                self.node.protocolError("stopped reading")
                self.closeReason = self.closeReason or "stopped reading"
                self.transport.abortConnection()
                return
        self.sendLine(line)


class DeviceFactory(Factory):
    """Builds a L{DeviceProtocol} for each device connection to a node."""

    def __init__(self, node: "Node", clock, settings: DeviceSettings):
        self.node = node
        self.clock = clock
        self.settings = settings
        self.connections: set[DeviceProtocol] = set()
        self.loggingIn: set[DeviceProtocol] = set()
        """The connections that have not logged in yet."""

    def closeAll(self, error: str, grace: float) -> "Deferred[None]":
        """
        Send every connection an C{error} line and close it; fires when all are
        closed, aborting any still open after C{grace} seconds.
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

    def buildProtocol(self, addr) -> DeviceProtocol:
        protocol = DeviceProtocol(self.node, self.clock, self.settings)
        protocol.factory = self
        return protocol
