"""
L{Repeats}: a node's memory of the requests it executed, so that a request repeated
through another broker is answered from what was done, never executed twice.

A caller with several brokers names each request (C{request} in the command); when its
broker stops answering it sends the same request to another one (CONTRACT §6, the ZeroMQ
guide's advice for non-idempotent requests). The node remembers each named request while
it is unanswered and for L{KEEP} seconds after, at most L{MAX_KEPT} of them: a repeat of
one still unanswered waits for the same answer, a repeat of one answered gets that answer.
"""

from collections import OrderedDict
from typing import Callable

from twisted.internet.defer import Deferred, succeed

from devicehub.common.results import Reply

KEEP = 30.0
"""Seconds an answered request is remembered: a caller repeats a request within a few seconds of losing its broker."""
MAX_KEPT = 100_000
"""Most requests remembered at once; the oldest are forgotten first."""
MAX_REQUEST = 64
"""Longest request name taken; a longer one is executed without being remembered."""


class _Entry:
    __slots__ = ("key", "at", "reply", "waiting")

    def __init__(self, key: tuple[str, str], at: float) -> None:
        self.key = key
        self.at = at
        self.reply: Reply | None = None
        self.waiting: list[Deferred] = []


class Repeats:
    """The named requests a node executed recently, and their answers."""

    def __init__(self, clock, keep: float = KEEP, maxKept: int = MAX_KEPT) -> None:
        self.clock = clock
        self.keep = keep
        self.maxKept = maxKept
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.repeated = 0
        """Repeats answered without executing them again."""

    def __len__(self) -> int:
        return len(self._entries)

    def execute(self, imei: str, request: object, run: Callable[[], "Deferred[Reply]"]) -> "Deferred[Reply]":
        """
        The answer to request C{request} for C{imei}: C{run()}'s the first time, the same
        answer (now or once known) for a repeat.
        """
        if not isinstance(request, str) or not request or len(request) > MAX_REQUEST:
            return run()
        now = self.clock.seconds()
        self._forgetOld(now)
        key = (imei, request)
        entry = self._entries.get(key)
        if entry is not None:
            self.repeated += 1
            if entry.reply is not None:
                return succeed(entry.reply)
            waiting: Deferred[Reply] = Deferred()
            entry.waiting.append(waiting)
            return waiting
        entry = self._entries[key] = _Entry(key, now)
        if len(self._entries) > self.maxKept:
            self._entries.popitem(last=False)
        return run().addCallback(self._answered, entry)

    def _answered(self, reply: Reply, entry: _Entry) -> Reply:
        entry.reply = reply
        entry.at = self.clock.seconds()
        if entry.key in self._entries:  # kept from now on, in the order of the answers
            self._entries.move_to_end(entry.key)
        waiting, entry.waiting = entry.waiting, []
        for repeat in waiting:
            repeat.callback(reply)
        return reply

    def _forgetOld(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.reply is None or now - entry.at < self.keep:
                return  # unanswered ones are kept; they move to the end when answered
            del entries[key]
