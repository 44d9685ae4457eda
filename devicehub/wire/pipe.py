"""
An in-process stand-in for a ZeroMQ link, used between roles in one reactor.

When the broker runs in the same process as a node or the API, their messages
need neither ZeroMQ nor JSON: a L{Pipe} hands each L{devicehub.wire.frames.Message}
to the far side's handler as it is. It keeps what the sockets guarantee and the
roles rely on: delivery in order and never inside the sender's call (so no role
sees a reply before its own send has returned), and at most L{Pipe.maxBatch}
messages per reactor turn, so a busy link cannot starve device connections.
"""

from collections import deque
from typing import Callable, Generic, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

log = Logger()

T = TypeVar("T")


class Pipe(Generic[T]):
    """One direction of an in-process link: what is sent goes to C{handler} on a later turn."""

    maxBatch = 256

    def __init__(self, reactor, handler: Callable[[T], None]) -> None:
        self.reactor = reactor
        self.handler = handler
        self._queue: deque[T] = deque()
        self._delivery = None
        self._flushed: list[Deferred[None]] = []
        self.closed = False

    def send(self, message: T) -> None:
        """Queue C{message} for the handler (ignored once the pipe is closed)."""
        if self.closed:
            return
        self._queue.append(message)
        if self._delivery is None:
            self._delivery = self.reactor.callLater(0, self._deliver)

    def _deliver(self) -> None:
        self._delivery = None
        queue, handler = self._queue, self.handler
        for _ in range(min(len(queue), self.maxBatch)):
            try:
                handler(queue.popleft())
            except Exception:
                log.failure("Unexpected error handling an in-process message")
        if queue:
            self._delivery = self.reactor.callLater(0, self._deliver)
        else:
            flushed, self._flushed = self._flushed, []
            for waiter in flushed:
                waiter.callback(None)

    def close(self, deliver: bool = False) -> "Deferred[None]":
        """
        Take nothing more. What was sent and not yet delivered is dropped, or with
        C{deliver} still delivered (as a socket's linger would); fires when nothing is left.
        """
        self.closed = True
        if not deliver:
            self._queue.clear()
            if self._delivery is not None and self._delivery.active():
                self._delivery.cancel()
            self._delivery = None
        if self._delivery is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._flushed.append(waiter)
        return waiter
