"""The root resource of the API: bearer token, the console, event streams, requests in flight."""

import hmac
from urllib.parse import unquote_to_bytes

from twisted.web.resource import Resource

from devicehub.api.console import Console
from devicehub.api.jsonio import respond
from devicehub.api.sse import EventStreams
from devicehub.common.drain import Idle


class ApiRoot(Resource):
    """
    The root of the API: checks the bearer token (when one is set; C{/health}
    and the console's files are open), counts requests in flight (for a draining
    shutdown) and refuses a URL whose path is not UTF-8 with a JSON 400 before
    Klein sees it (Klein would answer in plain text and log a traceback).

    The console (C{/} and C{/console/…}) holds no data: its page asks for the
    token and sends it with every request it makes, its event stream included
    (read with C{fetch}, not C{EventSource}, so the token never goes in a URL).
    """

    isLeaf = True
    OPEN_PATHS = (b"/health",)

    def __init__(
        self, inner: Resource, token: str | None = None, streams: EventStreams | None = None,
        console: Console | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.streams = streams
        self.console = Console() if console is None else console
        self.inflight = 0
        self.idle = Idle()
        """Fires its waiters when no request is in flight."""
        self._token = None if token is None else token.encode()

    def render(self, request):
        try:
            unquote_to_bytes(request.path).decode("utf-8")
        except UnicodeDecodeError:
            return respond(request, 400, {"error": "the URL is not UTF-8"})
        if self.console.serves(request.path):
            return self.console.render(request)
        if self._token is not None and request.path not in self.OPEN_PATHS:
            if not self._authorized(request.getHeader(b"authorization") or b""):
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="devicehub"')
                return respond(request, 401, {"error": "missing or wrong bearer token"})
        if request.path == b"/events" and self.streams is not None:
            # A stream never finishes by itself: not counted as in flight for draining.
            if request.method != b"GET":
                request.setHeader(b"Allow", b"GET")
                return respond(request, 405, {"error": "method not allowed"})
            return self.streams.render(request, respond)
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
