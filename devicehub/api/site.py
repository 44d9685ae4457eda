"""
The HTTP server of the API (L{ApiSite}): deadlines for receiving a request, the body
limit enforced as the body arrives, and the list of open connections for a draining stop.
"""

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableDescriptor
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.server import Request, Site

from devicehub.api.jsonio import bodyLimit
from devicehub.common.drain import Idle
from devicehub.common.jsoncodec import dumps


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
    """A request that refuses its body (413) as soon as it passes its limit (L{bodyLimit}), chunked too."""

    received = 0

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if channel is None or channel.refused:
            return
        self.received += len(data)
        limit = channel.bodyLimit()
        if self.received > limit:
            channel.refuse(413, f"body larger than {limit} bytes")
        else:
            super().handleContentChunk(data)


class _Channel(HTTPChannel):
    """
    Twisted's HTTP channel with deadlines for receiving a request (L{HEADERS_TIMEOUT},
    L{REQUEST_TIMEOUT}: 408 when missed) and a body limit enforced as the body arrives
    (L{bodyLimit}: 413 from the C{Content-Length} alone, or once a chunked body passes it).
    Neither deadline runs while a request is answered, so event streams and commands
    that wait for their device are not cut.
    """

    headersTimeout = HEADERS_TIMEOUT
    requestTimeout = REQUEST_TIMEOUT
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
        limit = self.bodyLimit()
        if self.length is not None and self.length > limit:
            self.refuse(413, f"body larger than {limit} bytes")  # before any 100 Continue
        else:
            super().allHeadersReceived()

    def bodyLimit(self) -> int:
        """The body limit of the request being received (L{bodyLimit}: larger for jobs)."""
        return bodyLimit(getattr(self, "_path", None) or b"")

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
