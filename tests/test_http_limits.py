"""Limits of the HTTP listener: its listen backlog, request deadlines and the body limit."""

import io
import json

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, LoopingCall
from twisted.internet.testing import MemoryReactor, StringTransport

from devicehub.api.jsonio import MAX_BODY
from devicehub.api.root import ApiRoot
from devicehub.api.routes import DeviceAPI
from devicehub.api.service import ApiService
from devicehub.api.settings import ApiSettings
from devicehub.api.site import HEADERS_TIMEOUT, IDLE_TIMEOUT, LINGER, REQUEST_TIMEOUT, ApiSite, _Channel
from devicehub.common.backlog import LISTEN_BACKLOG, withBacklog
from devicehub.common.metrics import Metrics
from devicehub.common.results import OK, Reply
from devicehub.api.sse import EventStreams
from twisted.web import http
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from .support import Hub, eventually
from .test_api_routes import FakeDemand


@pytest.mark.parametrize(
    "http, backlog",
    [("tcp:8080:interface=127.0.0.1", LISTEN_BACKLOG), ("tcp:8080", LISTEN_BACKLOG), ("tcp:8080:backlog=7", 7)],
)
def test_the_http_listener_has_a_backlog_of_1024_unless_its_endpoint_sets_one(http, backlog):
    reactor = MemoryReactor()
    service = ApiService(reactor, ApiSettings(http=http, commandTimeout=5.0), Metrics())
    service.listener.startService()
    [(port, factory, listened, interface)] = reactor.tcpServers
    assert (port, factory, listened) == (8080, service.site, backlog)


@pytest.mark.parametrize(
    "description, expected",
    [
        ("tcp:0", "tcp:0:backlog=1024"),
        ("tcp6:80:interface=\\:\\:1", "tcp6:80:interface=\\:\\:1:backlog=1024"),
        ("ssl:7443:privateKey=key.pem:certKey=cert.pem", "ssl:7443:privateKey=key.pem:certKey=cert.pem:backlog=1024"),
        ("unix:/run/backlog=x", "unix:/run/backlog=x:backlog=1024"),  # a path is not an option
        ("tcp:80:backlog=5", "tcp:80:backlog=5"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),  # takes no backlog
    ],
)
def test_with_backlog(description, expected):
    assert withBacklog(description) == expected


class Connection:
    """One HTTP connection, in memory, to an API on a fake clock (its Demand never answers C{hang})."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.api = DeviceAPI(FakeDemand(), commandTimeout=5.0, metrics=Metrics())
        self.streams = EventStreams(Metrics().eventsDropped.labels("sse"))
        self.site = ApiSite(ApiRoot(self.api.resource(), streams=self.streams), reactor=self.clock)
        self.channel = self.site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def send(self, raw: bytes) -> None:
        self.channel.dataReceived(raw)

    def trickle(self, raw: bytes, every: float) -> None:
        """C{raw} a byte at a time, one each C{every} seconds, while the connection stays open."""
        for byte in raw:
            if self.closing:
                return
            self.send(bytes([byte]))
            self.clock.advance(every)

    @property
    def closing(self) -> bool:
        return self.transport.disconnecting or getattr(self.channel, "refused", False)

    def answer(self) -> tuple[int, dict | bytes]:
        """The status and decoded body of the (one) answer written so far."""
        head, _, body = self.transport.value().partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"Transfer-Encoding: chunked" in head:
            chunks = []
            while not body.startswith(b"0\r\n"):
                size, _, body = body.partition(b"\r\n")
                chunks.append(body[: int(size, 16)])
                body = body[int(size, 16) + 2 :]
            body = b"".join(chunks)
        return status, json.loads(body) if b"application/json" in head else body


def command(body: bytes, extra: bytes = b"") -> bytes:
    return b"POST /devices/dev1/commands HTTP/1.1\r\nHost: hub\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_request_headers_trickled_a_byte_a_second_are_cut_after_ten_seconds():
    connection = Connection()
    connection.trickle(b"GET /health HTTP/1.1\r\nHost: hub\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n", every=1.0)
    assert connection.clock.seconds() == HEADERS_TIMEOUT
    assert connection.answer() == (408, {"error": "request headers not received within 10 s"})
    assert connection.transport.value().count(b"HTTP/1.1") == 1
    assert connection.transport.disconnecting or connection.clock.getDelayedCalls()  # closed, or cut at LINGER
    connection.clock.advance(LINGER)
    assert connection.transport.disconnecting


def test_a_body_trickled_a_byte_a_second_is_cut_after_sixty_seconds():
    connection = Connection()
    body = b'{"instruct": "x", "data": "' + b"a" * 100 + b'"}'
    connection.send(command(body)[:-len(body)])  # the headers at once
    connection.trickle(body, every=1.0)
    assert connection.clock.seconds() == REQUEST_TIMEOUT
    assert connection.answer() == (408, {"error": "request not received within 60 s"})
    assert connection.api.demand.calls == []


def test_a_connection_silent_between_requests_is_closed_after_its_idle_timeout():
    connection = Connection()
    connection.send(b"GET /openapi.json HTTP/1.1\r\nHost: hub\r\n\r\n")
    assert connection.answer()[0] == 200 and not connection.transport.disconnecting
    connection.clock.advance(IDLE_TIMEOUT - 1)
    assert not connection.transport.disconnecting
    connection.clock.advance(1)
    assert connection.transport.disconnecting


def test_a_command_waiting_for_its_device_and_an_event_stream_are_not_cut():
    waiting = Connection()
    waiting.send(command(b'{"instruct": "hang", "timeout": 300}'))
    streaming = Connection()
    streaming.send(b"GET /events HTTP/1.1\r\nHost: hub\r\n\r\n")
    for connection in (waiting, streaming):
        connection.clock.advance(3600)
        assert not connection.closing
    assert b"408" not in waiting.transport.value() + streaming.transport.value()
    [call] = waiting.api.demand.hanging
    call.callback(Reply(OK, 1))
    assert waiting.answer() == (200, {"result": "ok", "reply": 1})
    # the next request on the same connection has its own deadline, from its own first byte
    waiting.transport.clear()
    waiting.clock.advance(30)
    waiting.send(b"GET /health HTTP/1.1\r\n")
    waiting.clock.advance(HEADERS_TIMEOUT - 0.5)
    assert not waiting.closing
    waiting.clock.advance(0.5)
    assert waiting.answer()[0] == 408


def test_a_pipelined_request_gets_its_deadline_once_the_one_before_is_answered():
    connection = Connection()
    connection.send(command(b'{"instruct": "hang"}') + b"GET /health HTTP/1.1\r\n")
    connection.clock.advance(100)
    assert not connection.closing
    connection.api.demand.hanging[0].callback(Reply(OK))
    connection.clock.advance(HEADERS_TIMEOUT)
    assert connection.transport.value().endswith(b'{"error":"request headers not received within 10 s"}')


def test_a_content_length_past_the_limit_is_refused_before_the_body_and_without_100_continue():
    connection = Connection()
    connection.send(
        b"POST /devices/dev1/commands HTTP/1.1\r\nHost: hub\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
        % (MAX_BODY + 1)
    )
    assert connection.answer() == (413, {"error": f"body larger than {MAX_BODY} bytes"})
    connection.send(b"x" * (MAX_BODY + 1))  # sent anyway: dropped
    assert connection.channel.requests[-1].content is None  # nothing was buffered
    assert connection.api.demand.calls == []
    assert connection.transport.value().count(b"HTTP/1.1") == 1


def chunked(size: int) -> bytes:
    return b"%x\r\n%s\r\n" % (size, b" " * size)


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit():
    connection = Connection()
    connection.send(b"POST /devices/dev1/commands HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n")
    request = connection.channel.requests[-1]
    sent = 0
    while not connection.closing and sent < 2 * MAX_BODY:
        connection.send(chunked(65536))
        sent += 65536
    assert sent == MAX_BODY + 65536  # refused at the first chunk past the limit
    assert connection.answer() == (413, {"error": f"body larger than {MAX_BODY} bytes"})
    for _ in range(100):  # an endless body goes on: nothing more is kept
        connection.send(chunked(65536))
    assert request.received == sent and request.content.closed  # its buffer let go, nothing more read into it
    assert connection.api.demand.calls == []
    assert connection.transport.value().count(b"HTTP/1.1") == 1


def test_a_chunked_body_of_exactly_the_limit_is_taken():
    connection = Connection()
    body = b'{"instruct": "x", "data": "' + b"a" * (MAX_BODY - 29) + b'"}'
    assert len(body) == MAX_BODY
    connection.send(b"POST /devices/dev1/commands HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n")
    connection.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert connection.answer() == (200, {"result": "ok", "reply": None})


class RawClient(Protocol):
    """An HTTP client that sends what it is told, as slowly as it is told, and keeps what it gets."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred = Deferred()
        self.trickling: LoopingCall | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def trickle(self, byte: bytes, every: float) -> None:
        self.trickling = LoopingCall(self.transport.write, byte)
        self.trickling.clock = reactor
        self.trickling.start(every, now=False)

    def connectionLost(self, reason) -> None:
        if self.trickling is not None and self.trickling.running:
            self.trickling.stop()
        self.closed.callback(None)


async def rawClient(hub) -> RawClient:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", hub.api.listener.port.getHost().port)
    return await connectProtocol(endpoint, RawClient())


@pytest_twisted.async_yield_fixture
async def hub():
    hub = await Hub().start()
    yield hub
    await hub.stop()


@pytest_twisted.ensureDeferred
async def test_slow_loris_connections_get_408_and_are_closed(hub, monkeypatch):
    monkeypatch.setattr(_Channel, "headersTimeout", 0.5, raising=False)
    clients = [await rawClient(hub) for _ in range(300)]
    for client in clients:
        client.transport.write(b"GET /health HTTP/1.1\r\nHost: hub\r\nX-Slow: ")
        client.trickle(b"a", 0.05)  # a byte every 50 ms: Twisted's idle timeout never fires
    try:
        await eventually(lambda: all(client.closed.called for client in clients), timeout=3)
    finally:
        for client in clients:
            client.transport.abortConnection()
    assert {client.received.split(b"\r\n", 1)[0] for client in clients} == {b"HTTP/1.1 408 Request Time-out"}
    await eventually(lambda: not hub.api.site.channels)


@pytest_twisted.ensureDeferred
async def test_an_endless_chunked_body_gets_413_and_is_not_kept(hub, monkeypatch):
    kept: list[int] = []  # bytes of body written to a request's buffer
    monkeypatch.setattr(http.Request, "handleContentChunk", lambda self, data: kept.append(len(data)))
    client = await rawClient(hub)
    client.transport.write(b"POST /devices/dev1/commands HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)

    class Endless:
        """A chunk whenever the connection takes one, up to 8 MiB (the test must end without the fix too)."""

        sent = 0

        def resumeProducing(self):
            self.sent += 1
            client.transport.write(chunk if self.sent <= 128 else b"0\r\n\r\n")
            if self.sent > 128:
                client.transport.unregisterProducer()

        def stopProducing(self):
            pass

    client.transport.registerProducer(Endless(), False)
    await client.closed
    head, _, body = client.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and json.loads(body) == {"error": f"body larger than {MAX_BODY} bytes"}
    assert sum(kept) <= MAX_BODY
    await eventually(lambda: not hub.api.site.channels)


@implementer(IBodyProducer)
class Unsized(FileBodyProducer):
    """A body of unknown length: sent chunked."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.length = UNKNOWN_LENGTH


@pytest_twisted.ensureDeferred
async def test_a_body_past_the_limit_is_413_over_tls_too(tmp_path, monkeypatch):
    from .test_tls import TrustOnly, make_certificate

    lengths = []  # each refused request's Content-Length, None when chunked
    refuse = _Channel.refuse
    monkeypatch.setattr(_Channel, "refuse", lambda self, *args: (lengths.append(self.length), refuse(self, *args)))

    key, cert, pem = make_certificate(tmp_path)
    hub = await Hub(http=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}").start()
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = treq.client.HTTPClient(Agent(reactor, contextFactory=TrustOnly(pem), pool=pool))
    try:
        url = f"https://localhost:{hub.api.listener.port.getHost().port}/devices/dev1/commands"
        for body in (b" " * (4 << 20), Unsized(b" " * (4 << 20))):  # Content-Length, then chunked
            response = await client.post(url, data=body)
            assert response.code == 413, body
            assert json.loads(await response.content()) == {"error": f"body larger than {MAX_BODY} bytes"}
        assert lengths == [4 << 20, None]
        await eventually(lambda: not hub.api.site.channels)
    finally:
        await pool.closeCachedConnections()
        await hub.stop()
