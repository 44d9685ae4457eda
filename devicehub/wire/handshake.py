"""
L{HandshakeWatch}: say why a ZeroMQ connecting socket does not reach its peer.

ZeroMQ reconnects in silence: a subscriber without CURVE keys facing a CURVE broker,
or facing nothing at all, just waits. Its monitor events tell the cases apart.
"""

import itertools
from typing import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

from devicehub.wire.zmqsocket import ZmqSocket

PATIENCE = 5.0
"""Seconds without a completed handshake before the watch says that nothing answers."""

# Conclusive: the peer said why. A failure with no detail (the peer closed first) is
# often followed by the conclusive one, so it only counts once the patience runs out.
_REFUSED = (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_numbers = itertools.count(1)


class HandshakeWatch:
    """
    Watch the handshakes of a socket connecting to C{address} (feed it monitor
    events through L{event}, or L{attach} it to a socket).

    A refused handshake calls C{refused(reason)} at once and stops the watch: it
    will not succeed by waiting (the broker wants CURVE keys, or other keys); so do
    handshakes that failed without a reason and none done within C{patience} seconds.
    No handshake at all within C{patience} seconds calls C{silent(reason)} once, and
    the watch goes on. A completed handshake stops it.
    """

    def __init__(
        self,
        clock,
        address: str,
        *,
        curve: bool,
        refused: Callable[[str], None],
        silent: Callable[[str], None],
        patience: float = PATIENCE,
    ) -> None:
        self.address = address
        self.curve = curve
        self.refused = refused
        self.silent = silent
        self.patience = patience
        self._connected = False
        self._failed: tuple[int, int] | None = None
        self.watching = True
        self._timer = clock.callLater(patience, self._timedOut)
        self._stopHooks: list[Callable[[], None]] = []

    def event(self, kind: int, value: int) -> None:
        """One monitor event of the socket (C{ZMQ_EVENT_*} and its value)."""
        if not self.watching:
            return
        if kind == zmq.EVENT_CONNECTED:
            self._connected = True
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.stop()
        elif kind in _REFUSED:
            self.stop()
            self.refused(self._refusal(kind, value))
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self._failed = (kind, value)

    def _refusal(self, kind: int, value: int) -> str:
        where = f"the broker at {self.address}"
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            if self.curve:
                return f"{where} does not use CURVE: give no --curve-keys (nor DEVICEHUB_CURVE_KEYS)"
            return f"{where} requires CURVE: give --curve-keys DIR (or DEVICEHUB_CURVE_KEYS)"
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return f"{where} refused this client's key: authorize client.key in the broker's authorized/ directory"
        if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self.curve:
            return f"the CURVE handshake with {where} failed: are broker.key and client.key_secret the broker's?"
        return f"the ZeroMQ handshake with {where} failed (event {kind:#x}, code {value:#x}): is it a devicehub broker?"

    def _timedOut(self) -> None:
        self._timer = None
        if self._failed is not None:
            self.stop()
            self.refused(self._refusal(*self._failed))
        elif self._connected:
            self.silent(f"connected to {self.address} but no handshake completed in {self.patience:g} s; still waiting")
        else:
            self.silent(
                f"nothing answers at {self.address} after {self.patience:g} s (is the broker running?); still waiting"
            )

    def stop(self) -> None:
        """Stop watching (and stop reading the socket's monitor)."""
        self.watching = False
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        hooks, self._stopHooks = self._stopHooks, []
        for hook in hooks:
            hook()

    def attach(self, reactor, socket: zmq.Socket) -> "HandshakeWatch":
        """
        Read the monitor events of C{socket}, which connects to the watched address,
        in C{reactor}. Its connection is started again, so that no event of it comes
        before the monitor.
        """
        address = f"inproc://devicehub.wire.handshake.{next(_numbers)}"
        socket.monitor(address, zmq.EVENT_ALL)

        def received(frames: list[bytes]) -> None:
            message = parse_monitor_message(frames)
            self.event(message["event"], message["value"])

        monitor = ZmqSocket(reactor, zmq.PAIR, received, connect=[address])
        # An inproc connect attaches its pipe at once, after the read ZmqSocket did on creation:
        # read (nothing) again, so that ZeroMQ signals the descriptor when events arrive.
        monitor.doRead()

        def detach() -> None:
            try:
                socket.disable_monitor()
            except zmq.ZMQError:
                pass  # the socket is closed already
            monitor.shutdown()

        self._stopHooks.append(detach)
        socket.disconnect(self.address)
        socket.connect(self.address)
        return self
