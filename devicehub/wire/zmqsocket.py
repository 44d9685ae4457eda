"""
A txZMQ connection with devicehub's edges owned in one place.

txZMQ's L{ZmqConnection} reads until the socket is empty and schedules its
post-send read on the global reactor. Here the reactor is injected, one
L{ZmqSocket.doRead} handles at most L{ZmqSocket.maxBatch} messages before
yielding to the other descriptors (the ZeroMQ FD is edge-triggered, so the rest
is read by a scheduled call, never left waiting for a signal that will not
come), a failing handler is logged instead of stopping the read loop, and
every socket closes with no linger so shutdown never blocks the reactor.
"""

from types import SimpleNamespace
from typing import Callable, Iterable

import zmq
from twisted.logger import Logger
from txzmq.connection import ZmqConnection, ZmqEndpoint, ZmqEndpointType

log = Logger()

# Messages a socket queues per peer before send() raises zmq.Again.
HIGH_WATER_MARK = 100_000
# Plain ints: pyzmq's flag enums cost more than the send itself on the hot path.
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_SNDMORE = int(zmq.NOBLOCK | zmq.SNDMORE)
# pyzmq's own send, without the Python layer that handles routing ids and groups (unused here).
_send = zmq.backend.Socket.send

Handler = Callable[[list[bytes]], None]


class ZmqSocket(ZmqConnection):
    """One ZeroMQ socket in the reactor; complete messages go to C{handler}."""

    maxBatch = 256
    highWaterMark = HIGH_WATER_MARK

    def __init__(
        self,
        reactor,
        socketType: int,
        handler: Handler,
        *,
        bind: Iterable[str] = (),
        connect: Iterable[str] = (),
        mandatory: bool = False,
        immediate: bool = False,
        curve=None,
        maxMessageSize: int = -1,
        batchDone: Callable[[], None] | None = None,
    ) -> None:
        """
        @param mandatory: (ROUTER) make a send to an unknown peer raise
            C{zmq.ZMQError(EHOSTUNREACH)} instead of vanishing.
        @param immediate: queue messages only to completed connections, so a
            send with no peer raises C{zmq.Again} instead of waiting for one.
        @param curve: L{devicehub.wire.curve.CurveKeys} to authenticate and encrypt with.
        @param maxMessageSize: bytes; a peer sending a larger frame is disconnected (-1: no limit).
        @param batchDone: called after each L{doRead} that handled messages, once it has
            handled them all (a client sends then what their handlers asked for, at once).
        """
        self.socketType = socketType
        self.handler = handler
        self.batchDone = batchDone
        self.readable = socketType not in (zmq.PUB, zmq.PUSH)
        factory = SimpleNamespace(
            context=zmq.Context.instance(),
            lingerPeriod=0,
            connections=set(),
            reactor=reactor,
        )
        super().__init__(factory)
        if mandatory:
            self.socket.set(zmq.ROUTER_MANDATORY, 1)
        if immediate:
            self.socket.set(zmq.IMMEDIATE, 1)
        self.socket.set(zmq.MAXMSGSIZE, maxMessageSize)
        if curve is not None:
            curve.apply(self.socket)
        self.addEndpoints(
            [ZmqEndpoint(ZmqEndpointType.bind, address) for address in bind]
            + [ZmqEndpoint(ZmqEndpointType.connect, address) for address in connect]
        )

    @property
    def lastEndpoint(self) -> str:
        """The address last bound, with any wildcard port resolved."""
        return self.socket.get(zmq.LAST_ENDPOINT).decode()

    def doRead(self) -> None:
        """Handle up to L{maxBatch} messages, then yield to the reactor."""
        if self.read_scheduled is not None:
            if not self.read_scheduled.called:
                self.read_scheduled.cancel()
            self.read_scheduled = None
        if not self.readable:
            # Nothing to receive, but ZeroMQ signals the FD for its own commands too
            # (a bind done, a peer attaching): asking for EVENTS processes them and
            # clears the FD, which would otherwise keep the reactor's poll spinning.
            if self.socket is not None:
                self.socket.get(zmq.EVENTS)
            return
        handled = 0
        try:
            for _ in range(self.maxBatch):
                socket = self.socket
                if socket is None:
                    return
                # Reading until EAGAIN (rather than asking EVENTS each time) also re-arms the
                # edge-triggered FD: it signals again once more messages arrive.
                # A Frame's "more" flag is cheaper to read than the RCVMORE option.
                try:
                    frame = socket.recv(_NOBLOCK, copy=False)
                except zmq.Again:
                    return
                frames = [frame.bytes]
                while frame.more:  # the rest of a multipart message is already here
                    frame = socket.recv(_NOBLOCK, copy=False)
                    frames.append(frame.bytes)
                handled += 1
                try:
                    self.handler(frames)
                except Exception:
                    log.failure("Unexpected error handling a ZeroMQ message")
            self._scheduleRead()
        finally:
            if handled and self.batchDone is not None:
                try:
                    self.batchDone()
                except Exception:
                    log.failure("Unexpected error after a batch of ZeroMQ messages")

    def sendFrames(self, frames: list[bytes]) -> None:
        """
        Send one multipart message without blocking.

        @raise zmq.Again: the peer's queue is full or (with C{immediate}) there
            is no connected peer.
        @raise zmq.ZMQError: (C{mandatory} ROUTER) the peer is unknown, or the socket is closed.
        """
        if self.socket is None:
            raise zmq.ZMQError(zmq.ENOTSOCK)
        socket = self.socket
        # Only the first part can fail (Again, or an unknown peer): ZeroMQ queues a
        # multipart message whole once its first part is taken.
        for frame in frames[:-1]:
            _send(socket, frame, _NOBLOCK_SNDMORE)
        _send(socket, frames[-1], _NOBLOCK)
        # Sending may consume the FD's edge: read what arrived meanwhile.
        self._scheduleRead()

    def _scheduleRead(self) -> None:
        if self.read_scheduled is None and self.socket is not None and self.readable:
            self.read_scheduled = self.factory.reactor.callLater(0, self.doRead)

    def shutdown(self, linger: float = 0) -> None:
        """
        Close the socket without blocking; ZeroMQ's own thread keeps trying
        to deliver what is unsent for C{linger} seconds.
        """
        if self.socket is not None:
            self.socket.set(zmq.LINGER, int(linger * 1000))
            super().shutdown()
