"""
Events of the devices (online, offline, their own messages), numbered per device and
published to subscribers (CONTRACT §3, docs/operations.md).
"""

from typing import Any, Callable

from devicehub.common.imei import is_valid_imei
from devicehub.common.jsoncodec import dumps
from devicehub.common.metrics import Metrics

Publish = Callable[[bytes, bytes], None]


class EventPublisher:
    """
    Publishes each event with C{n}, the device's event number while it is online, so a
    subscriber can count what it missed. Without a C{publish} function it does nothing.
    """

    def __init__(self, clock, publish: Publish | None, metrics: Metrics) -> None:
        self.clock = clock
        self.publish = publish
        self.metrics = metrics
        self._numbers: dict[str, int] = {}

    def uplink(self, node: str, body: dict[str, Any]) -> None:
        """A device's own message, as its node reported it, published as its event."""
        if is_valid_imei(body["imei"]):
            message = body["message"]
            data = {key: value for key, value in message.items() if key != "type"}
            protocol = body.get("protocol")
            self.event(body["imei"], node, str(message.get("type")), data, body["ts"],
                       protocol if isinstance(protocol, str) else None)

    def event(
        self, imei: str, node: str, kind: str, data: Any, ts: float | None = None, protocol: str | None = None
    ) -> None:
        """Publish one event of C{imei}, on C{node}; an C{offline} event ends its numbering."""
        if self.publish is None:
            return
        number = self._numbers.get(imei, 0) + 1
        if kind == "offline":
            self._numbers.pop(imei, None)
        else:
            self._numbers[imei] = number
        body = {"imei": imei, "node": node, "type": kind, "data": data,
                "ts": self.clock.seconds() if ts is None else ts, "n": number}
        if protocol is not None:
            body["protocol"] = protocol
        self.publish(imei.encode(), dumps(body))
        self.metrics.eventsPublished.inc()
