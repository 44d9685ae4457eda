"""Waiting out work in flight when a role stops."""

from typing import Callable

from twisted.internet.task import deferLater

DEFAULT_DRAIN_TIMEOUT = 10.0
"""Seconds a stopping role waits for its work in flight to finish."""

POLL_INTERVAL = 0.05


async def drain(clock, busy: Callable[[], object], timeout: float) -> None:
    """Return once C{busy()} is false, or after C{timeout} seconds."""
    deadline = clock.seconds() + timeout
    while busy() and clock.seconds() < deadline:
        await deferLater(clock, POLL_INTERVAL, lambda: None)
