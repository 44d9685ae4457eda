"""
A client's or node's link to a broker: the one place that chooses between ZeroMQ and an
in-process pipe.

A broker running in the same process offers an L{Attach} (its C{connectClient} or
C{connectNode}); a link given one talks through a L{devicehub.wire.pipe.Pipe}, with neither
ZeroMQ nor JSON in between. Otherwise it is a DEALER connected to the broker's address.
Either way the owner sends and receives decoded L{Message}s.
"""

from typing import Callable

import zmq
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from devicehub.common.logs import Throttled
from devicehub.wire import frames
from devicehub.wire.frames import FrameError, Message
from devicehub.wire.pipe import Pipe
from devicehub.wire.zmqsocket import ZmqSocket

log = Logger()
throttled = Throttled(log)

Deliver = Callable[[Message], None]
Attach = Callable[[Deliver], Pipe[Message]]
"""A broker in this process: takes the peer's handler of answers, returns the pipe to send on."""


class Link:
    """
    Messages to and from one broker. L{send} raises C{zmq.Again} when ZeroMQ has no
    connected broker to queue for (a pipe never does).

    A C{notSent} link holds what is sent while it hands a batch of messages from ZeroMQ
    to C{deliver} (the answers that make a client send its next calls), and sends it all
    once the batch is handled: ZeroMQ's I/O thread is then woken once for them all, not
    once for each, which cost a client ~10 us of CPU per call on a 2-core machine
    (docs/performance.md). What ZeroMQ then cannot take goes to C{notSent}.
    """

    def __init__(
        self, reactor, address: str, deliver: Deliver, *, local: Attach | None = None, curve=None,
        linger: float = 0.0, peer: str = "the broker", notSent: Deliver | None = None,
    ) -> None:
        """
        @param address: the broker's ZeroMQ address (unused with C{local}).
        @param local: the broker of this process to attach to instead.
        @param linger: seconds L{close} waits for what was sent to leave.
        @param peer: how log lines name the far side.
        @param notSent: takes each message held for the end of a batch that ZeroMQ then
            could not queue; without it, nothing is held.
        """
        self.address = address
        self._deliver = deliver
        self._linger = linger
        self._peer = peer
        self._notSent = notSent
        self._held: list[Message] | None = None
        """While a batch is handled (with C{notSent}): what was sent meanwhile."""
        self._socket: ZmqSocket | None = None
        self._pipe: Pipe[Message] | None = None
        if local is not None:
            self._pipe = local(deliver)
            self.send = self._pipe.send
        else:
            self._socket = ZmqSocket(reactor, zmq.DEALER, self.received, connect=[address], immediate=True, curve=curve,
                                     batchDone=None if notSent is None else self._sendHeld)

    @property
    def inProcess(self) -> bool:
        return self._pipe is not None

    def send(self, message: Message) -> None:
        """Hand C{message} to the broker (held till the end of a batch, while one is handled)."""
        if self._held is not None:
            self._held.append(message)
        else:
            self._socket.sendFrames(message.frames())

    def received(self, raw: list[bytes]) -> None:
        """Handle the frames of one message from ZeroMQ."""
        try:
            message = frames.decode(raw)
        except FrameError as e:
            throttled.warn("Dropped a malformed message from {peer}: {error}", peer=self._peer, error=e)
            return
        if self._notSent is not None and self._held is None:
            self._held = []
        self._deliver(message)

    def _sendHeld(self) -> None:
        held, self._held = self._held, None
        for message in held or ():
            if self._socket is None:
                return  # closed meanwhile: its calls fail with the close
            try:
                self._socket.sendFrames(message.frames())
            except zmq.ZMQError:  # Again: no broker connected now, or its queue is full
                self._notSent(message)

    def close(self) -> "Deferred[None]":
        """Stop; fires once what was sent has gone (a pipe delivers it, a socket lingers)."""
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            return pipe.close(deliver=self._linger > 0)
        if self._socket is not None:
            socket, self._socket = self._socket, None
            return socket.shutdown(linger=self._linger) or succeed(None)
        return succeed(None)
