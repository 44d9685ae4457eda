"""
C{GET /events[?imei=…]}: the broker's events as Server-Sent Events.

One subscriber per api process fans out to every web client. Each client gets its
own bounded backlog for the time its connection does not take data; past that,
events for that client are dropped (and counted), never slowing anyone else.
"""

from collections import deque
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from devicehub.common.jsoncodec import dumps
from devicehub.common.imei import is_valid_imei

MAX_BACKLOG = 1000


@implementer(IPushProducer)
class _Stream:
    def __init__(self, request, imei: str | None, dropped) -> None:
        self.request = request
        self.imei = imei
        self.dropped = dropped
        self.paused = False
        self.backlog: deque[bytes] = deque()
        request.registerProducer(self, True)

    def offer(self, event: dict[str, Any]) -> None:
        if self.imei is not None and event["imei"] != self.imei:
            return
        chunk = b"data: " + dumps(event) + b"\n\n"
        if not self.paused:
            self.request.write(chunk)
        elif len(self.backlog) < MAX_BACKLOG:
            self.backlog.append(chunk)
        else:
            self.dropped.inc()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self.backlog and not self.paused:
            self.request.write(self.backlog.popleft())

    def stopProducing(self) -> None:
        self.backlog.clear()


class EventStreams:
    """The open event streams of one api process."""

    def __init__(self, dropped) -> None:
        self.dropped = dropped
        self.streams: set[_Stream] = set()

    def publish(self, event: dict[str, Any]) -> None:
        """Offer one event to every stream (the subscriber's callback)."""
        for stream in list(self.streams):
            stream.offer(event)

    def render(self, request, respondError) -> Any:
        """Open a stream for C{request}; C{respondError(request, status, body)} answers bad input."""
        imei = None
        if b"imei" in request.args:
            try:
                imei = request.args[b"imei"][-1].decode()
            except UnicodeDecodeError:
                imei = None
            if not is_valid_imei(imei):
                return respondError(request, 400, {"error": "invalid imei"})
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.write(b": connected\n\n")
        stream = _Stream(request, imei, self.dropped)
        self.streams.add(stream)
        request.notifyFinish().addBoth(self._closed, stream)
        return NOT_DONE_YET

    def _closed(self, result: object, stream: _Stream) -> None:
        self.streams.discard(stream)

    def closeAll(self) -> None:
        """End every stream (the api process is stopping)."""
        for stream in list(self.streams):
            stream.request.unregisterProducer()
            stream.request.finish()
