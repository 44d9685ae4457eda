"""
L{Repeats}: a node's memory of the requests it executed, so that a request repeated
through another broker is answered from what was done, never executed twice.

A caller with several brokers names each request (C{request} in the command); when its
broker stops answering it sends the same request to another one (CONTRACT §6, the ZeroMQ
guide's advice for non-idempotent requests). The node remembers each named request while
it is unanswered (all of them: they are bounded by the devices' pending commands), and for
L{KEEP} seconds after its answer (at most L{MAX_KEPT} answers): a repeat of one still
unanswered waits for the same answer, a repeat of one answered gets that answer again.
"""

from collections import OrderedDict
from typing import Callable

from twisted.internet.defer import Deferred, succeed

from devicehub.common.limits import MAX_TIMEOUT
from devicehub.common.results import Reply

KEEP = MAX_TIMEOUT + 30.0
"""Seconds an answer is remembered: longer than any caller waits for it (and so may repeat it)."""
MAX_KEPT = 100_000
"""Most answers remembered at once; the oldest are forgotten first."""
MAX_REQUEST = 64
"""Longest request name taken; a longer one is executed without being remembered."""

Key = tuple[str, str]


class Repeats:
    """The named requests a node executed recently, and their answers."""

    def __init__(self, clock, keep: float = KEEP, maxKept: int = MAX_KEPT) -> None:
        self.clock = clock
        self.keep = keep
        self.maxKept = maxKept
        self._unanswered: dict[Key, list[Deferred]] = {}
        """Requests executing now, and the repeats that wait for their answer."""
        self._answered: OrderedDict[Key, tuple[float, Reply]] = OrderedDict()
        """Answers, oldest first, with when they came."""
        self.repeated = 0
        """Repeats answered without executing them again."""

    def __len__(self) -> int:
        return len(self._unanswered) + len(self._answered)

    def execute(self, imei: str, request: object, run: Callable[[], "Deferred[Reply]"]) -> "Deferred[Reply]":
        """
        The answer to request C{request} for C{imei}: C{run()}'s the first time, the same
        answer (now or once known) for a repeat.
        """
        if not isinstance(request, str) or not request or len(request) > MAX_REQUEST:
            return run()
        self._forgetOld(self.clock.seconds())
        key = (imei, request)
        answered = self._answered.get(key)
        if answered is not None:
            self.repeated += 1
            return succeed(answered[1])
        waiting = self._unanswered.get(key)
        if waiting is not None:
            self.repeated += 1
            repeat: Deferred[Reply] = Deferred()
            waiting.append(repeat)
            return repeat
        self._unanswered[key] = []
        return run().addBoth(self._done, key)

    def _done(self, reply, key: Key):
        waiting = self._unanswered.pop(key, [])
        if isinstance(reply, Reply):
            self._answered[key] = (self.clock.seconds(), reply)
            if len(self._answered) > self.maxKept:
                self._answered.popitem(last=False)
        for repeat in waiting:  # a failure (a bug) fails the repeats alike
            repeat.callback(reply) if isinstance(reply, Reply) else repeat.errback(reply)
        return reply

    def _forgetOld(self, now: float) -> None:
        answered = self._answered
        while answered:
            key, (at, _) = next(iter(answered.items()))
            if now - at < self.keep:
                return
            del answered[key]
