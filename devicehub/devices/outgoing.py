"""
L{Outgoing}: writing to one device, with backpressure.

While the transport's buffer is full (the device stopped reading, the transport paused its
producer, the session), what is written still goes to the transport, but is counted; past
C{limit} bytes the device is cut off.

On a plain TCP connection with nothing waiting in the transport's buffer, a write is one
C{send()} at once. Twisted's own write would ask the reactor to watch the socket for
writing and send on the next turn: two C{epoll_ctl} calls and a turn per command, about a
fifth of a command's cost at the hub (docs/performance.md). Whatever that C{send()} does
not take, and every write behind it, still goes through the transport, in order.
"""

from typing import Protocol

from twisted.internet import tcp

from devicehub.common.listening import LeanServer

_PLAIN_TCP = frozenset((tcp.Server, LeanServer))
"""Transports whose socket a write may C{send()} to directly (unless TLS is on)."""


class OutgoingSession(Protocol):
    """What an L{Outgoing} tells its session."""

    def stoppedReading(self) -> None:
        """More than the limit was written since the device stopped reading: cut it off."""


class Outgoing:
    """
    Writes to one device and counts what waits while it is not reading.

    @param session: told L{OutgoingSession.stoppedReading}, instead of writing, once more
        than C{limit} bytes were written since the device stopped reading.
    """

    __slots__ = (
        "transport", "_backlog", "_limit", "_session", "paused",
    )

    def __init__(self, limit: int, session: OutgoingSession) -> None:
        self.transport = None
        """The connection's transport (set once connected)."""
        self._limit = limit
        self._session = session
        self.paused = False
        """Whether the device stopped reading (the transport's buffer is full)."""
        self._backlog = 0

    def pause(self) -> None:
        """The device stopped reading: count what is written from now on."""
        self.paused = True

    def resume(self) -> None:
        """The device reads again."""
        self.paused = False
        self._backlog = 0

    def write(self, data: bytes) -> None:
        """Write C{data} to the device, unless that would put it past the limit."""
        if not data:
            return
        if self.paused:
            self._backlog += len(data)
            if self._backlog > self._limit:
                self._session.stoppedReading()
                return
        transport = self.transport
        if (type(transport) in _PLAIN_TCP and not transport.TLS and transport.connected
                and not transport.dataBuffer and not transport._tempDataBuffer and not transport.disconnecting):
            try:
                sent = transport.socket.send(data)
            except OSError:  # EAGAIN, or an error the transport's own write finds and handles
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)
