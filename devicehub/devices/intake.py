"""
L{Intake}: what a device connection received and has not handled yet.

A flooding device must not hold the reactor: the bytes are fed to the codec
L{FEED_BYTES} at a time, at most L{LINES_PER_TURN} messages are handled per reactor
turn, and the transport stops reading meanwhile.
"""

from typing import Protocol

from devicehub.devices.codec import Codec, Message

# Messages handled per reactor turn for one connection; the rest wait a turn (reading paused),
# so a flooding device cannot hold the reactor for long (64 KiB of pings is ~4 000 lines).
LINES_PER_TURN = 100
# Bytes handed to the codec at a time, so that decoding too is spread over turns.
FEED_BYTES = 8192

_NONE: tuple[Message, ...] = ()


class IntakeSession(Protocol):
    """What an L{Intake} tells its session."""

    def resetTimeout(self) -> None:
        """A message is about to be handled (the idle timeout starts again)."""

    def messageReceived(self, message: Message) -> None:
        """Handle one message."""

    def messagesHandled(self, count: int) -> None:
        """C{count} messages were handled, after each batch."""


class Intake:
    """
    Feeds one connection's bytes to its codec and hands each message to its handler,
    a bounded number per reactor turn.

    @param session: its connection's session (L{IntakeSession}).
    """

    __slots__ = (
        "transport", "_batch", "_clock", "_codec", "_next", "_nextTurn", "_session", "_stopped", "_unfed",
    )

    def __init__(self, codec: Codec, clock, session: "IntakeSession") -> None:
        self.transport = None
        """The connection's transport (set once connected): paused while messages wait a turn."""
        self._codec = codec
        self._clock = clock
        # The session itself, not three bound methods of it: 200 bytes less per connection.
        self._session = session
        self._unfed = b""
        # The codec's last list of messages and the next one to handle (a deque for each of
        # many thousand idle connections would cost 760 bytes each).
        self._batch: list[Message] | tuple[Message, ...] = _NONE
        self._next = 0
        self._nextTurn = None
        self._stopped = False

    @property
    def waiting(self) -> bool:
        """Whether messages decoded wait to be handled."""
        return self._next < len(self._batch)

    def receive(self, data: bytes) -> None:
        """Take bytes from the device; handle them now unless earlier ones wait for the next turn."""
        self._unfed += data
        if self._nextTurn is None:
            self._turn()

    def stop(self) -> None:
        """Handle no more messages (the connection was refused); what waits is dropped."""
        self._stopped = True

    def close(self) -> None:
        """The connection closed: cancel the next turn."""
        if self._nextTurn is not None and self._nextTurn.active():
            self._nextTurn.cancel()

    def _turn(self) -> None:
        """Handle up to L{LINES_PER_TURN} messages; leave the rest for the next turn, not reading meanwhile."""
        self._nextTurn = None
        self.handle(LINES_PER_TURN)
        if not self.transport.disconnecting and (self.waiting or self._unfed):
            self.transport.pauseProducing()  # stop reading this socket meanwhile
            self._nextTurn = self._clock.callLater(0, self._nextMessages)

    def _nextMessages(self) -> None:
        self.transport.resumeProducing()
        self._turn()

    def handle(self, limit: int | None) -> None:
        """
        Handle up to C{limit} messages (all, if None), feeding the codec as needed; with a
        C{limit}, none once the transport is disconnecting.
        """
        session = self._session
        handle, reset = session.messageReceived, session.resetTimeout
        handled = 0
        while limit is None or handled < limit:
            if self._next >= len(self._batch):
                if not self._unfed:
                    self._batch, self._next = _NONE, 0  # an idle connection keeps no list
                    break
                if len(self._unfed) <= FEED_BYTES:
                    data, self._unfed = self._unfed, b""
                else:
                    data, self._unfed = self._unfed[:FEED_BYTES], self._unfed[FEED_BYTES:]
                self._batch, self._next = self._codec.feed(data), 0
                continue
            if self._stopped or (limit is not None and self.transport.disconnecting):
                self._batch, self._next = _NONE, 0
                self._unfed = b""
                break
            message = self._batch[self._next]
            self._next += 1
            reset()
            handle(message)
            handled += 1
        session.messagesHandled(handled)
