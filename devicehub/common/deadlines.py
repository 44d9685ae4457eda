"""
L{Deadlines} and L{Timeouts}: the timeouts of many waits on one reactor timer.

A busy role has thousands of waits in flight, each with a timeout it almost never reaches:
a reactor timer of its own for each (C{callLater} and C{cancel}, or C{Deferred.addTimeout})
costs an object, a heap insertion and a cancellation per command. Waits of the same length
end in the order they began, so both keep one ordered map per length, from each wait to
its end (a dict, which keeps its keys in the order they came, at 30-70 bytes a key where
an C{OrderedDict} takes 75-125): adding and cancelling are dictionary operations, and one
reactor timer is set for the earliest end.

L{Deadlines} makes a call per wait, as C{callLater} does, and gives back a L{Deadline} to
cancel. L{Timeouts} keeps one timeout for each of many objects of a kind (the connections
of a node) with no object per timeout: each idle connection spends ~150 bytes less.
"""

from math import inf
from typing import Any, Callable, Generic, Hashable, TypeVar

from twisted.logger import Logger

log = Logger()

K = TypeVar("K", bound=Hashable)


class _OneTimer(Generic[K]):
    """Keys waiting for their end, in one map per length, and the reactor timer of the earliest."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self._queues: dict[float, dict[K, float]] = {}
        self._timer = None
        self._timerAt = inf
        self._firing = False

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def _queue(self, seconds: float) -> dict[K, float]:
        queue = self._queues.get(seconds)
        if queue is None:
            queue = self._queues[seconds] = {}
        return queue

    def _add(self, queue: dict[K, float], key: K, seconds: float) -> None:
        when = queue[key] = self.clock.seconds() + seconds
        if when < self._timerAt and not self._firing:
            self._arm(when)

    def _restart(self, queue: dict[K, float], key: K, seconds: float) -> None:
        """C{key}'s wait starts again from now: to the end of its queue (the timer, set for an earlier end, stays)."""
        del queue[key]
        queue[key] = self.clock.seconds() + seconds

    def _remove(self, queue: dict[K, float], key: K) -> None:
        del queue[key]
        if not queue:
            self._emptied()

    def _expired(self, key: K) -> None:
        """C{key}'s time came (it has left its queue)."""
        raise NotImplementedError

    def _dropped(self, key: K) -> None:
        """C{key} was taken out by L{stop}."""

    def stop(self) -> None:
        """Cancel every wait and the timer."""
        for queue in self._queues.values():
            for key in queue:
                self._dropped(key)
            queue.clear()  # a call that stops them all, while they fire, stops the rest firing too
        self._queues.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer, self._timerAt = None, inf

    def _emptied(self) -> None:
        """A length's last wait was cancelled: with none left at all, no timer either."""
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
            for queue in list(self._queues.values()):
                while queue:
                    key, when = next(iter(queue.items()))
                    if when > now:
                        break
                    del queue[key]
                    try:
                        self._expired(key)
                    except Exception:
                        log.failure("Unexpected error at a deadline")
        finally:
            self._firing = False
        earliest = inf
        for seconds, queue in list(self._queues.items()):
            if queue:
                earliest = min(earliest, next(iter(queue.values())))
            else:
                del self._queues[seconds]
        if earliest < inf:
            self._arm(earliest)


class Deadline:
    """One wait's timeout (as a C{DelayedCall}: L{cancel} and L{active})."""

    __slots__ = ("_length", "_call", "_args", "_queue", "_owner")

    def __init__(self, length: float, call: Callable[..., Any], args: tuple, queue: "dict[Deadline, float]",
                 owner: "Deadlines") -> None:
        self._length = length
        self._call = call
        self._args = args
        self._queue: dict[Deadline, float] | None = queue
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
            self._owner._restart(queue, self, self._length)

    def cancel(self) -> None:
        """Never fire (nothing happens once it fired or was cancelled)."""
        queue = self._queue
        if queue is not None:
            self._queue = None
            self._owner._remove(queue, self)


class Deadlines(_OneTimer[Deadline]):
    """
    Calls made when their time comes, as C{clock.callLater} makes them, all on one timer
    of C{clock}'s, which is cancelled whenever no deadline is left. L{stop} cancels every
    deadline, and the timer.
    """

    def callLater(self, seconds: float, call: Callable[..., Any], *args: Any) -> Deadline:
        """Call C{call(*args)} in C{seconds} seconds, unless the returned L{Deadline} is cancelled."""
        queue = self._queue(seconds)
        deadline = Deadline(seconds, call, args, queue, self)
        self._add(queue, deadline, seconds)
        return deadline

    def _expired(self, deadline: Deadline) -> None:
        deadline._queue = None
        deadline._call(*deadline._args)

    def _dropped(self, deadline: Deadline) -> None:
        deadline._queue = None


class Timeouts(_OneTimer[K]):
    """
    One timeout for each of many objects, all on one timer of C{clock}'s: C{expired(key)}
    is called when C{key}'s comes. Meant for a few lengths (a connection's login and idle
    timeouts): L{reset} and L{cancel} look for the key in each length's map.
    """

    def __init__(self, clock, expired: Callable[[K], None]) -> None:
        super().__init__(clock)
        self._call = expired

    def set(self, key: K, seconds: float) -> None:
        """C{key}'s timeout is C{seconds} from now (any it had is cancelled)."""
        self.cancel(key)
        self._add(self._queue(seconds), key, seconds)

    def reset(self, key: K) -> None:
        """C{key}'s timeout starts again from now, its length the same (nothing if it has none)."""
        for seconds, queue in self._queues.items():
            if key in queue:
                self._restart(queue, key, seconds)
                return

    def cancel(self, key: K) -> None:
        """C{key} has no timeout now (nothing if it had none)."""
        for queue in self._queues.values():
            if key in queue:
                self._remove(queue, key)
                return

    def active(self, key: K) -> bool:
        """Whether C{key} has a timeout that has not come."""
        return any(key in queue for queue in self._queues.values())

    def _expired(self, key: K) -> None:
        self._call(key)
