"""
Waiting out work in flight when a role stops: Deferreds that fire when the work is done,
bounded by the drain timeout (no polling).
"""

from typing import Iterable, TypeVar

from twisted.internet.defer import Deferred, TimeoutError, gatherResults, succeed

DEFAULT_DRAIN_TIMEOUT = 10.0
"""Seconds a stopping role waits for its work in flight to finish."""

T = TypeVar("T")


class Idle:
    """
    Tells those waiting that a count of work in flight fell to zero. Its owner calls
    L{fire} when it does (cheaply guarded by L{waiting}).
    """

    def __init__(self) -> None:
        self._waiters: list[Deferred[None]] = []

    @property
    def waiting(self) -> bool:
        """Is anyone waiting?"""
        return bool(self._waiters)

    def wait(self, busy: bool) -> "Deferred[None]":
        """A Deferred firing at the next L{fire}, or at once when not C{busy}; cancellable."""
        if not busy:
            return succeed(None)
        waiter: Deferred[None] = Deferred(lambda d: self._waiters.remove(d))
        self._waiters.append(waiter)
        return waiter

    def fire(self) -> None:
        """The work in flight is done: wake everyone waiting."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)


def observe(work: "Deferred[T]") -> "Deferred[None]":
    """
    A Deferred that fires (with None) when C{work} does, leaving C{work}'s result to its
    own callbacks; cancelling it does not cancel C{work}.
    """
    observer: Deferred[None] = Deferred()

    def fired(result: T) -> T:
        if not observer.called:
            observer.callback(None)
        return result

    work.addBoth(fired)
    return observer


def allDone(work: Iterable[Deferred]) -> "Deferred[None]":
    """Fires once every Deferred of C{work} has (their results untouched)."""
    return gatherResults([observe(d) for d in work]).addCallback(lambda _: None)


async def drain(clock, work: "Deferred[object]", timeout: float) -> bool:
    """Wait for C{work}, at most C{timeout} seconds; True when it finished in time."""
    try:
        await work.addTimeout(timeout, clock)
    except TimeoutError:
        return False
    return True
