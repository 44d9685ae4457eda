"""
Commands to many devices: at most C{inflight} at a time, each device's result as it comes
(CONTRACT §7). L{devicehub.client.demand.Demand.send_many} and the api's jobs use it.
"""

from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, DeferredList

from devicehub.common.errors import DevicehubError
from devicehub.common.results import QUEUED, Reply

DEFAULT_INFLIGHT = 100
"""Commands one bulk send keeps in flight when not told: enough to keep a broker busy, few
enough that other callers' commands are not kept waiting behind them."""

ERROR = "error"
"""The result of a device whose command got no device answer: the broker refused it (busy,
invalid for its protocol) or did not answer."""

Outcome = dict[str, Any]
"""One device's outcome: C{{"imei", "result", "data"}} (C{"id"} when queued, C{"error"} on an error)."""


def outcome(imei: str, reply: "Reply | Exception") -> Outcome:
    """What one device's command came to, as the jobs and C{send_many} tell it."""
    if isinstance(reply, Exception):
        return {"imei": imei, "result": ERROR, "error": f"{type(reply).__name__}: {reply}"}
    if reply.result == QUEUED:
        return {"imei": imei, "result": QUEUED, "id": reply.id}
    return {"imei": imei, "result": reply.result, "data": reply.data}


LIST_PAGE = 1000


async def online(demand, prefix: str = "", limit: int | None = None, timeout: float | None = None) -> list[str]:
    """
    The devices online now whose imei starts with C{prefix}, sorted (the directory is), read
    page by page; ValueError past C{limit} of them.
    """
    found: dict[str, None] = {}  # devices logging in meanwhile shift the pages: one may come twice
    page = 0
    while True:
        devices = (await demand.getpage(LIST_PAGE, page, timeout=timeout)).devices
        found.update(dict.fromkeys(imei for imei in devices if imei.startswith(prefix)))
        if limit is not None and len(found) > limit:
            raise ValueError(f"more than {limit} devices")
        if len(devices) < LIST_PAGE or (prefix and devices[-1] > prefix and not devices[-1].startswith(prefix)):
            return list(found)
        page += 1


class Pace:
    """
    How many commands a bulk send may have unanswered now. A bulk send is background work:
    it takes what the hub has to spare, not the other callers' turn. Every L{interval} it
    times a C{probe} (a query the broker answers itself, no device involved); while the
    probe takes more than L{slack} times its time before the send started, the hub is
    congested and the window halves; otherwise it grows by one, up to C{maximum}
    (delay-based congestion control, as LEDBAT yields to other traffic).
    """

    interval = 0.02
    slack = 1.05
    floor = 0.0001
    """Seconds of congestion below which the probe is not believed (the clock's and the reactor's noise)."""

    def __init__(self, clock, probe: Callable[[], Deferred], maximum: int) -> None:
        self.clock = clock
        self.probe = probe
        self.maximum = maximum
        self.window = 1
        self.base: float | None = None
        self._timer = None
        self._probing = False
        self._grown: Callable[[], None] = lambda: None

    async def start(self, grown: Callable[[], None]) -> None:
        """Time the probe idle (the base), then keep pacing; C{grown} is called when the window grows."""
        self._grown = grown
        samples = []
        for _ in range(3):
            started = self.clock.seconds()
            try:
                await self.probe()
            except Exception:  # the broker warming up, say: a failed probe says nothing of the base
                continue
            samples.append(self.clock.seconds() - started)
        self.base = min(samples) if samples else self.floor
        self._timer = self.clock.callLater(self.interval, self._tick)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _tick(self) -> None:
        self._timer = self.clock.callLater(self.interval, self._tick)
        if not self._probing:
            self._probing = True
            started = self.clock.seconds()
            self.probe().addBoth(self._timed, started)

    def _timed(self, result, started: float) -> None:
        self._probing = False
        took = self.clock.seconds() - started
        if hasattr(result, "value") or took > max(self.slack * self.base, self.base + self.floor):
            self.window = max(1, self.window // 2)
        elif self.window < self.maximum:
            self.window = min(self.maximum, self.window + 1)
            self._grown()


async def each(
    imeis: Iterable[str], send: Callable[[str], "Deferred[Reply]"], onOutcome: Callable[[int, Outcome], None],
    inflight: int = DEFAULT_INFLIGHT, pace: Pace | None = None,
) -> None:
    """
    C{send(imei)} for every imei, at most C{inflight} unanswered at a time (fewer while
    C{pace} says the hub is busy), in order; C{onOutcome(index, outcome)} for each as it is
    answered. Returns once all are.
    """
    unanswered = 0
    room: list[Deferred] = []
    calls: list[Deferred] = []

    def limit() -> int:
        return inflight if pace is None else min(inflight, pace.window)

    def wake() -> None:
        while room and unanswered < limit():
            room.pop(0).callback(None)

    def answered(reply, index: int, imei: str) -> None:
        nonlocal unanswered
        unanswered -= 1
        error = reply.value if hasattr(reply, "value") else None
        try:
            if error is not None and not isinstance(error, (DevicehubError, ValueError)):
                reply.raiseException()  # a bug, not a device's outcome
            onOutcome(index, outcome(imei, error if error is not None else reply))
        finally:
            wake()

    if pace is not None:
        await pace.start(wake)
    try:
        for index, imei in enumerate(imeis):
            if unanswered >= limit():
                waiting: Deferred = Deferred()
                room.append(waiting)
                await waiting
            unanswered += 1
            call = send(imei)
            call.addBoth(answered, index, imei)
            calls.append(call)
        await DeferredList(calls, consumeErrors=True)
    finally:
        if pace is not None:
            pace.stop()
