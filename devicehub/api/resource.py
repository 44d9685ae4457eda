"""
The api role: the HTTP API of CONTRACT §4, a Klein app over a L{Demand}.

Every answer, errors included, is JSON. Device outcomes map to 200/202 (ok),
404 (no) and 504 (timeout); bad input to 400; a broker that does not answer to 503.
"""

import hmac
import math
from collections.abc import Coroutine
from typing import Any
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableDescriptor
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.server import NOT_DONE_YET, Request, Site
from werkzeug.exceptions import HTTPException

from devicehub.client.demand import Demand
from devicehub.common.errors import BrokerUnavailable, Busy, CommandStoreFailed, RequestRejected
from devicehub.common.drain import DEFAULT_DRAIN_TIMEOUT, Idle, drain
from devicehub.client.events import Events
from devicehub.common.jsoncodec import BadJSON, dumps, loads
from devicehub.wire.link import Attach
from devicehub.common.imei import is_valid_imei
from devicehub.common.limits import MAX_NUM, MAX_TIMEOUT, MAX_TTL
from devicehub.common.listening import ListeningService
from devicehub.common.metrics import CONTENT_TYPE_LATEST, Metrics
from devicehub.api.openapi import openapi
from devicehub.common.results import NO, OK, QUEUED, TIMEOUT
from devicehub.api.sse import EventStreams

log = Logger()

MAX_BODY = 1 << 20
# The fields of a command's body: any other is refused (a typo must not go unnoticed).
COMMAND_FIELDS = frozenset({"instruct", "data", "wait", "timeout", "queue", "ttl", "coalesce"})
# Seconds a directory query (list, presence, health) waits for the broker.
QUERY_TIMEOUT = 2.0

_WAIT_STATUS = {OK: 200, NO: 404, TIMEOUT: 504}


class BadInput(Exception):
    """A request the API refuses with 400 (or C{status}) and this message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _respond(request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return dumps(body)


def _intArg(request, name: str, default: int, maximum: int | None) -> int:
    values = request.args.get(name.encode())
    if not values:
        return default
    try:
        value = int(values[-1].decode("ascii"), 10)
    except (UnicodeDecodeError, ValueError):
        raise BadInput(f"{name} must be a whole number") from None
    if value < 0 or (maximum is not None and value > maximum):
        limit = f"in 0..{maximum}" if maximum is not None else ">= 0"
        raise BadInput(f"{name} must be {limit}")
    return value


def _checkedImei(imei: str) -> str:
    if not is_valid_imei(imei):
        raise BadInput("invalid imei")
    return imei


def _jsonBody(request) -> dict[str, Any]:
    raw = request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise BadInput(f"body larger than {MAX_BODY} bytes", 413)
    try:
        body = loads(raw)
    except BadJSON:
        raise BadInput("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadInput("body must be a JSON object")
    return body


def _secondsField(body: dict[str, Any], name: str, maximum: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= maximum:
        raise BadInput(f"{name} must be a number with 0 < {name} <= {maximum:g}")
    return float(value)


def _boolField(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadInput(f"{name} must be true or false")
    return value


class DeviceAPI:
    """The HTTP routes; C{demand} reaches the broker."""

    app = Klein()

    def __init__(
        self,
        demand: Demand | None,
        commandTimeout: float,
        queryTimeout: float = QUERY_TIMEOUT,
        metrics: Metrics | None = None,
    ) -> None:
        self.demand = demand
        self.commandTimeout = commandTimeout
        self.queryTimeout = queryTimeout
        self.metrics = metrics or Metrics()

    @app.route("/devices", methods=["GET"])
    async def listDevices(self, request) -> bytes:
        num = _intArg(request, "num", 50, MAX_NUM)
        page = _intArg(request, "page", 0, None)
        found = await self.demand.getpage(num, page, timeout=self.queryTimeout)
        return _respond(request, 200, {"total": found.total, "num": num, "page": page, "devices": found.devices})

    @app.route("/devices/<imei>", methods=["GET"])
    async def findDevice(self, request, imei: str) -> bytes:
        result = await self.demand.find(_checkedImei(imei), timeout=self.queryTimeout)
        online = result == OK
        return _respond(request, 200 if online else 404, {"imei": imei, "online": online})

    @app.route("/devices/<imei>/commands", methods=["POST"])
    async def sendCommand(self, request, imei: str) -> bytes:
        _checkedImei(imei)
        body = _jsonBody(request)
        unknown = body.keys() - COMMAND_FIELDS
        if unknown:
            raise BadInput(f"unknown field {min(unknown)!r} (known: {', '.join(sorted(COMMAND_FIELDS))})")
        instruct = body.get("instruct")
        if not isinstance(instruct, str) or not instruct:
            raise BadInput("instruct must be a non-empty string")
        wait = _boolField(body, "wait", True)
        timeout = _secondsField(body, "timeout", MAX_TIMEOUT)
        queueing = {
            "queue": _boolField(body, "queue", False),
            "ttl": _secondsField(body, "ttl", MAX_TTL),
            "coalesce": _boolField(body, "coalesce", False),
        }
        data = body.get("data")
        if wait:
            reply = await self.demand.request(imei, instruct, data, timeout or self.commandTimeout, **queueing)
        else:
            reply = await self.demand.request_nowait(imei, instruct, data, **queueing)
        if reply.result == QUEUED:
            return _respond(request, 202, {"result": QUEUED, "id": reply.id})
        if not wait:
            return _respond(request, 202 if reply.result == OK else 404, {"result": reply.result})
        answer: dict[str, Any] = {"result": reply.result}
        if reply.result == OK:
            answer["reply"] = reply.data
        return _respond(request, _WAIT_STATUS[reply.result], answer)

    @app.route("/devices/<imei>/queue", methods=["GET"])
    async def deviceQueue(self, request, imei: str) -> bytes:
        commands = await self.demand.queued(_checkedImei(imei), timeout=self.queryTimeout)
        return _respond(request, 200, {"imei": imei, "commands": commands})

    @app.route("/commands/<id>", methods=["GET"])
    async def commandStatus(self, request, id: str) -> bytes:
        command = await self.demand.status(id, timeout=self.queryTimeout)
        if command is None:
            return _respond(request, 404, {"error": "no such command"})
        return _respond(request, 200, command)

    @app.route("/commands/<id>", methods=["DELETE"])
    async def cancelCommand(self, request, id: str) -> bytes:
        # The broker answers a command's record after the attempt, "cancelled" whether this
        # call cancelled it or an earlier one did: only its state before tells them apart.
        command = await self.demand.status(id, timeout=self.queryTimeout)
        if command is not None and command["state"] == "queued":
            command = await self.demand.cancel(id, timeout=self.queryTimeout)
            if command is not None and command["state"] == "cancelled":
                return _respond(request, 200, command)
        if command is None:
            return _respond(request, 404, {"error": "no such command"})
        return _respond(request, 409, {"error": f"the command is {command['state']}, not queued", "command": command})

    @app.route("/health", methods=["GET"])
    async def health(self, request) -> bytes:
        state = await self.demand.health(timeout=self.queryTimeout)
        if state["store"] == "failing":
            return _respond(request, 503, {"status": "store failing", "error": "the command store failed", **state})
        return _respond(request, 200, {"status": "ok", **state})

    @app.route("/metrics", methods=["GET"])
    def metricsText(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.exposition()

    @app.route("/openapi.json", methods=["GET"])
    def openapiDocument(self, request) -> bytes:
        return _respond(request, 200, openapi())

    @app.handle_errors(Exception)
    def error(self, request, failure) -> bytes:
        """The JSON answer to a failed request, whichever route it took."""
        error = failure.value
        if isinstance(error, BadInput):
            return _respond(request, error.status, {"error": str(error)})
        if isinstance(error, CommandStoreFailed):
            return _respond(request, 503, {"error": str(error)})
        if isinstance(error, BrokerUnavailable):
            return _respond(request, 503, {"error": f"broker unavailable: {error}"})
        if isinstance(error, RequestRejected):
            return _respond(request, 400, {"error": str(error)})
        if isinstance(error, Busy):
            return _respond(request, 429, {"error": str(error)})
        if isinstance(error, HTTPException):
            if error.code == 405 and error.valid_methods:
                request.setHeader(b"Allow", ", ".join(error.valid_methods).encode())
            return _respond(request, error.code, {"error": error.name.lower()})
        log.failure("Unexpected error answering {method} {uri}", failure, method=request.method, uri=request.uri)
        return _respond(request, 500, {"error": "internal error"})

    def resource(self) -> Resource:
        """The routes as a Twisted Web resource."""
        return _Routes(self)


class _Routes(Resource):
    """
    Klein's resource for L{DeviceAPI}, except that C{POST /devices/{imei}/commands},
    the route that carries the load, is called directly: Klein's own work for each
    request (binding its URL map to the request's host, adapting the request, two
    C{maybeDeferred}s) was a third of the hub's CPU per HTTP command (see
    docs/performance.md). Both ways give the same answers (tests/test_api_routes.py).
    """

    isLeaf = True

    def __init__(self, api: DeviceAPI) -> None:
        super().__init__()
        self.api = api
        self.klein = api.app.resource()

    def render(self, request):
        path = request.postpath  # its segments, percent-decoded
        if request.method == b"POST" and len(path) == 3 and path[0] == b"devices" and path[2] == b"commands":
            imei = path[1].decode("latin-1")
            if is_valid_imei(imei):  # anything else takes Klein's way, to the same answer
                return self._answer(request, self.api.sendCommand(request, imei))
        return self.klein.render(request)

    def _answer(self, request, handler: Coroutine[Any, Any, bytes]) -> int:
        """Run a route's coroutine as Klein would: its bytes or its error as the response."""
        answer = Deferred.fromCoroutine(handler)
        gone = False

        def clientGone(failure) -> None:
            nonlocal gone
            gone = True
            answer.cancel()

        def respond(body: bytes) -> None:
            if not gone:
                request.write(body)
                request.finish()

        request.notifyFinish().addErrback(clientGone)
        answer.addErrback(lambda failure: b"" if gone else self.api.error(request, failure))
        answer.addCallback(respond)
        return NOT_DONE_YET


class ApiRoot(Resource):
    """
    The root of the API: checks the bearer token (when one is set; C{/health}
    is open), counts requests in flight (for a draining shutdown) and refuses a
    URL whose path is not UTF-8 with a JSON 400 before Klein sees it (Klein
    would answer in plain text and log a traceback).
    """

    isLeaf = True
    OPEN_PATHS = (b"/health",)

    def __init__(self, inner: Resource, token: str | None = None, streams: EventStreams | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.streams = streams
        self.inflight = 0
        self.idle = Idle()
        """Fires its waiters when no request is in flight."""
        self._token = None if token is None else token.encode()

    def render(self, request):
        try:
            unquote_to_bytes(request.path).decode("utf-8")
        except UnicodeDecodeError:
            return _respond(request, 400, {"error": "the URL is not UTF-8"})
        if self._token is not None and request.path not in self.OPEN_PATHS:
            if not self._authorized(request.getHeader(b"authorization") or b""):
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="devicehub"')
                return _respond(request, 401, {"error": "missing or wrong bearer token"})
        if request.path == b"/events" and self.streams is not None:
            # A stream never finishes by itself: not counted as in flight for draining.
            if request.method != b"GET":
                request.setHeader(b"Allow", b"GET")
                return _respond(request, 405, {"error": "method not allowed"})
            return self.streams.render(request, _respond)
        self.inflight += 1
        request.notifyFinish().addBoth(self._finished)
        return self.inner.render(request)

    def _authorized(self, header: bytes) -> bool:
        """Whether C{header} is C{Bearer TOKEN}, the scheme in any case (RFC 7235)."""
        scheme, _, credentials = header.partition(b" ")
        # compared even for a wrong scheme: the time taken does not tell which part was wrong
        matches = hmac.compare_digest(credentials.lstrip(b" "), self._token)
        return scheme.lower() == b"bearer" and matches

    def _finished(self, result: object) -> None:
        self.inflight -= 1
        if not self.inflight and self.idle.waiting:
            self.idle.fire()


# Seconds a stopping api process waits for its connections to flush and close.
CLOSE_GRACE = 2.0


# Seconds a request has, from its first byte, to send all its headers, and to send all
# of itself (its body included). Unlike the idle timeout (Twisted's, which every byte
# resets and which is off while a request is answered), these hold against a client
# that trickles its request a byte at a time.
HEADERS_TIMEOUT = 10.0
REQUEST_TIMEOUT = 60.0
# Seconds a connection may stay silent between requests (Twisted's idle timeout).
IDLE_TIMEOUT = 60.0
# Seconds a refused connection may go on sending (read and dropped) before it is cut:
# closing on unread data resets the connection, and the client may lose the answer.
LINGER = 2.0


class _Request(Request):
    """A request that refuses its body (413) as soon as it passes L{MAX_BODY}, chunked too."""

    received = 0

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if channel is None or channel.refused:
            return
        self.received += len(data)
        if self.received > channel.maxBody:
            channel.refuse(413, f"body larger than {channel.maxBody} bytes")
        else:
            super().handleContentChunk(data)


class _Channel(HTTPChannel):
    """
    Twisted's HTTP channel with deadlines for receiving a request (L{HEADERS_TIMEOUT},
    L{REQUEST_TIMEOUT}: 408 when missed) and a body limit enforced as the body arrives
    (L{MAX_BODY}: 413 from the C{Content-Length} alone, or once a chunked body passes it).
    Neither deadline runs while a request is answered, so event streams and commands
    that wait for their device are not cut.
    """

    headersTimeout = HEADERS_TIMEOUT
    requestTimeout = REQUEST_TIMEOUT
    maxBody = MAX_BODY
    refused = False
    _headersDue: IDelayedCall | None = None
    _requestDue: IDelayedCall | None = None
    _lingering: IDelayedCall | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return  # dropped: the answer is written, the connection closing
        if data and self._requestDue is None and not self._handlingRequest:  # a request's first bytes
            self._requestDue = self.callLater(self.requestTimeout, self._late, "request", self.requestTimeout)
            self._headersDue = self.callLater(self.headersTimeout, self._late, "request headers", self.headersTimeout)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancel("_headersDue")
        if self.length is not None and self.length > self.maxBody:
            self.refuse(413, f"body larger than {self.maxBody} bytes")  # before any 100 Continue
        else:
            super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if not self.refused:
            self._cancel("_headersDue")
            self._cancel("_requestDue")
            super().allContentReceived()

    def _late(self, what: str, seconds: float) -> None:
        self.refuse(408, f"{what} not received within {seconds:g} s")

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        setattr(self, name, None)
        if call is not None and call.active():
            call.cancel()

    def refuse(self, status: int, message: str) -> None:
        """
        Answer the request being received with C{status} and a JSON error, and close:
        nothing more of it is read into memory or answered.
        """
        self.refused = True
        if self.requests and self.requests[-1].content is not None:
            self.requests[-1].content.close()  # what the body left on disk or in memory
        self._cancel("_headersDue")
        self._cancel("_requestDue")
        self.setTimeout(None)
        body = dumps({"error": message})
        self.transport.writeSequence(
            [
                b"HTTP/1.1 %d %s\r\n" % (status, RESPONSES[status]),
                b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body),
                body,
            ]
        )
        # Stop writing (a FIN after the answer) but go on reading, dropping what comes,
        # until the client closes or LINGER passes. TLS has no half-close: the answer
        # says Connection: close.
        if not self.isSecure() and IHalfCloseableDescriptor.providedBy(self.transport):
            self.transport.loseWriteConnection()
        self._lingering = self.callLater(LINGER, self.transport.abortConnection)

    def connectionLost(self, reason) -> None:
        self.factory.channels.discard(self)
        if not self.factory.channels and self.factory.idle.waiting:
            self.factory.idle.fire()
        for name in ("_headersDue", "_requestDue", "_lingering"):
            self._cancel(name)
        super().connectionLost(reason)


class ApiSite(Site):
    """
    A Site that knows its open connections, so that a stopping api process can close
    them once their responses are written: the reactor's own shutdown drops whatever
    a connection has not sent yet. POST bodies are JSON, never parsed as forms.
    """

    protocol = _Channel
    requestFactory = _Request

    def __init__(self, resource, accessLog: str | None = None, reactor=None) -> None:
        """
        @param accessLog: a file to append the access log to (Combined Log Format),
            C{"-"} for the process log, or None for no access log.
        @param reactor: the clock of its connections' idle timeouts.
        """
        super().__init__(
            resource,
            logPath=None if accessLog in (None, "-") else accessLog,
            parsePOSTFormSubmission=False,
            reactor=reactor,
            timeout=IDLE_TIMEOUT,
        )
        self.accessLog = accessLog
        self.channels: set[HTTPChannel] = set()
        self.idle = Idle()
        """Fires its waiters when no connection is open."""

    def log(self, request) -> None:
        if self.accessLog is not None:
            super().log(request)

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        self.channels.add(channel)
        return channel

    def closeAll(self) -> None:
        """Close every connection after it has sent what it has."""
        for channel in list(self.channels):
            channel.transport.loseConnection()


class ApiService(MultiService):
    """The api role: the HTTP API listening on C{http}, a client of C{frontend}."""

    def __init__(
        self,
        reactor,
        *,
        http: str,
        frontend: str,
        commandTimeout: float,
        drainTimeout: float = DEFAULT_DRAIN_TIMEOUT,
        token: str | None = None,
        accessLog: str | None = None,
        curveKeys: str | None = None,
        metrics: Metrics | None = None,
        events: str | None = None,
        local: Attach | None = None,
    ) -> None:
        """
        @param accessLog: see L{ApiSite}.
        @param local: the broker of this process: reach it in-process instead of over ZeroMQ.
        """
        super().__init__()
        self.local = local
        self.curveKeys = curveKeys
        self.events = events
        self.subscriber: Events | None = None
        self.reactor = reactor
        self.frontend = frontend
        self.drainTimeout = drainTimeout
        self.api = DeviceAPI(None, commandTimeout, metrics=metrics)
        self.streams = EventStreams(self.api.metrics.eventsDropped.labels("sse"))
        self.root = ApiRoot(self.api.resource(), token, self.streams)
        self.site = ApiSite(self.root, accessLog, reactor)
        self.listener = ListeningService(reactor, http, self.site, "HTTP")
        self.listener.setServiceParent(self)

    def startService(self) -> None:
        # ZeroMQ sockets are made here, after twistd may have forked, never before.
        self.api.demand = Demand(
            self.frontend, self.api.commandTimeout, reactor=self.reactor, curve_keys=self.curveKeys, local=self.local
        )
        if self.events is not None:
            upstream = self.api.metrics.eventsDropped.labels("upstream")
            self.subscriber = Events(
                self.events,
                callback=self.streams.publish,
                onDrop=upstream.inc,
                reactor=self.reactor,
                curve_keys=self.curveKeys,
            )
        super().startService()

    async def _stop(self) -> None:
        await MultiService.stopService(self)  # stop listening
        self.streams.closeAll()
        if self.subscriber is not None:
            self.subscriber.close()
        await drain(self.reactor, self.root.idle.wait(bool(self.root.inflight)), self.drainTimeout)
        self.api.demand.close()  # what still waits answers 503
        # A finished response may still sit in a connection's buffer: close the
        # connections (which flushes them) and wait, instead of leaving them to the
        # reactor's shutdown, which drops unsent data.
        self.site.closeAll()
        await drain(self.reactor, self.site.idle.wait(bool(self.site.channels)), CLOSE_GRACE)

    def stopService(self) -> Deferred:
        """Stop listening, let requests in flight finish (up to the drain timeout), then close."""
        return Deferred.fromCoroutine(self._stop())
