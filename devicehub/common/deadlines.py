"""
L{Deadlines}: the timeouts of many waits on one reactor timer.

A busy role has thousands of waits in flight, each with a timeout it almost never reaches:
a reactor timer of its own for each (C{callLater} and C{cancel}, or C{Deferred.addTimeout})
costs an object, a heap insertion and a cancellation per command. Waits of the same length
end in the order they began, so L{Deadlines} keeps one ordered set per length (a dict, which
keeps its keys in the order they came, at 30-70 bytes a key where an C{OrderedDict} takes
75-125): adding and cancelling are dictionary operations, and one reactor timer is set for
the earliest end.
"""

from math import inf
from typing import Any, Callable

from twisted.logger import Logger

log = Logger()


class Deadline:
    """One wait's timeout (as a C{DelayedCall}: L{cancel} and L{active})."""

    __slots__ = ("when", "_length", "_call", "_args", "_queue", "_owner")

    def __init__(self, length: float, call: Callable[..., Any], args: tuple, queue: "dict[Deadline, None]",
                 owner: "Deadlines") -> None:
        self.when = owner.clock.seconds() + length
        self._length = length
        self._call = call
        self._args = args
        self._queue: dict[Deadline, None] | None = queue
        self._owner = owner

    def active(self) -> bool:
        """Whether it has neither fired nor been cancelled."""
        return self._queue is not None

    def reset(self) -> None:
        """
        Wait its whole length again from now (as C{DelayedCall.reset}: an idle timeout
        restarted by every message); nothing once it fired or was cancelled.
        """
        queue = self._queue
        if queue is not None:
            self.when = self._owner.clock.seconds() + self._length
            del queue[self]
            queue[self] = None  # to the end

    def cancel(self) -> None:
        """Never fire (nothing happens once it fired or was cancelled)."""
        queue = self._queue
        if queue is not None:
            del queue[self]
            self._queue = None
            if not queue:
                self._owner._emptied()


class Deadlines:
    """
    Calls made when their time comes, as C{clock.callLater} makes them, all on one timer
    of C{clock}'s, which is cancelled whenever no deadline is left. L{stop} cancels every
    deadline, and the timer.
    """

    def __init__(self, clock) -> None:
        self.clock = clock
        self._queues: dict[float, dict[Deadline, None]] = {}
        self._timer = None
        self._timerAt = inf
        self._firing = False

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def callLater(self, seconds: float, call: Callable[..., Any], *args: Any) -> Deadline:
        """Call C{call(*args)} in C{seconds} seconds, unless the returned L{Deadline} is cancelled."""
        queue = self._queues.get(seconds)
        if queue is None:
            queue = self._queues[seconds] = {}
        deadline = Deadline(seconds, call, args, queue, self)
        queue[deadline] = None
        if deadline.when < self._timerAt and not self._firing:
            self._arm(deadline.when)
        return deadline

    def stop(self) -> None:
        """Cancel every deadline and the timer."""
        for queue in self._queues.values():
            for deadline in queue:
                deadline._queue = None
            queue.clear()  # a call that stops them all, while they fire, stops the rest firing too
        self._queues.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer, self._timerAt = None, inf

    def _emptied(self) -> None:
        """A length's last deadline was cancelled: with none left at all, no timer either."""
        if not self._firing and not any(self._queues.values()):
            self.stop()

    def _arm(self, when: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timerAt = when
        self._timer = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer, self._timerAt = None, inf
        self._firing = True
        try:
            now = self.clock.seconds()
            for seconds, queue in list(self._queues.items()):
                while queue:
                    deadline = next(iter(queue))
                    if deadline.when > now:
                        break
                    del queue[deadline]
                    deadline._queue = None
                    try:
                        deadline._call(*deadline._args)
                    except Exception:
                        log.failure("Unexpected error at a deadline")
        finally:
            self._firing = False
        earliest = inf
        for seconds, queue in list(self._queues.items()):
            if queue:
                earliest = min(earliest, next(iter(queue)).when)
            else:
                del self._queues[seconds]
        if earliest < inf:
            self._arm(earliest)
