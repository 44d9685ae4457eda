"""
L{Events}: a subscriber to the broker's event stream.

The broker publishes on its C{--events} address (ZeroMQ PUB): topic = the imei,
body = JSON C{{"imei","node","type","data","ts","n","protocol"}}. C{type} is C{online} or
C{offline} (presence; C{data} says why) or the C{type} of a device's own message
(C{data}: its other fields). C{n} numbers one device's events while it is online.

Delivery is at most once: a subscriber that does not keep up loses events instead of
slowing devices or the broker. Losses are counted in L{Events.dropped}: events that
overflowed this subscriber's queue, plus gaps in C{n} (events ZeroMQ dropped upstream).
"""

from typing import Any, Callable

import zmq
from twisted.internet.defer import DeferredQueue, QueueOverflow
from twisted.logger import Logger

from devicehub.wire.curve import clientKeys
from devicehub.common.jsoncodec import ENVELOPE_DEPTH, BadJSON, loads
from devicehub.common.addresses import DEFAULT_EVENTS
from devicehub.common.logs import Throttled
from devicehub.wire.zmqsocket import ZmqSocket

log = Logger()
throttled = Throttled(log)

_CLOSED = object()

Event = dict[str, Any]


class Events:
    """
    Subscribe to events of device C{imei} (or of all devices). Give a
    C{callback}, or iterate: C{async for event in events: ...}.
    """

    def __init__(
        self,
        address: str = DEFAULT_EVENTS,
        imei: str | None = None,
        *,
        callback: Callable[[Event], None] | None = None,
        onDrop: Callable[[int], None] | None = None,
        maxQueue: int = 1000,
        reactor=None,
        curve_keys=None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.imei = imei
        self.callback = callback
        self.onDrop = onDrop
        self.dropped = 0
        """Events this subscriber lost (queue overflow, or gaps in C{n})."""
        self._lastNumber: dict[str, int] = {}
        self._queue: DeferredQueue = DeferredQueue(size=maxQueue, backlog=1)
        self._closed = False
        curve = None if curve_keys is None else clientKeys(curve_keys)
        self._socket: ZmqSocket | None = ZmqSocket(reactor, zmq.SUB, self._received, connect=[address], curve=curve)
        self._socket.socket.setsockopt(zmq.SUBSCRIBE, b"" if imei is None else imei.encode())

    def _received(self, raw: list[bytes]) -> None:
        try:
            if len(raw) != 2:
                raise BadJSON(f"expected 2 frames, got {len(raw)}")
            event = loads(raw[1], ENVELOPE_DEPTH)
            if not isinstance(event, dict) or not isinstance(event.get("imei"), str):
                raise BadJSON("not an event")
        except BadJSON as e:
            throttled.warn("Dropped a malformed event: {error}", error=e)
            return
        if self.imei is not None and event["imei"] != self.imei:
            return  # ZeroMQ topics match by prefix
        self._count(event)
        if self.callback is not None:
            try:
                self.callback(event)
            except Exception:
                log.failure("An event callback failed")
            return
        try:
            self._queue.put(event)
        except QueueOverflow:
            self._drop(1)

    def _count(self, event: Event) -> None:
        imei, number = event["imei"], event.get("n")
        if not isinstance(number, int):
            return
        last = self._lastNumber.get(imei)
        if last is not None and number > last + 1:
            self._drop(number - last - 1)
        if event.get("type") == "offline":
            self._lastNumber.pop(imei, None)
        else:
            self._lastNumber[imei] = number

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self.onDrop is not None:
            self.onDrop(count)

    def __aiter__(self) -> "Events":
        return self

    async def __anext__(self) -> Event:
        if self._closed and not self._queue.pending:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is _CLOSED:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        """Unsubscribe; an C{async for} over these events ends."""
        if self._socket is None:
            return
        self._socket.shutdown()
        self._socket = None
        self._closed = True
        if self._queue.waiting:
            self._queue.put(_CLOSED)
