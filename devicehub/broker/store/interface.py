"""
What both command stores share: the states, the record of a command, the errors, and
L{Store}, the interface that L{devicehub.broker.store.sqlite.CommandStore} and
L{devicehub.broker.store.postgres.PostgresCommandStore} implement.
"""

import json
import re
from typing import Any, TypedDict

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

QUEUED, SENT, ACKED, EXPIRED, FAILED, CANCELLED, REPLACED = (
    "queued", "sent", "acked", "expired", "failed", "cancelled", "replaced",
)
MAX_ATTEMPTS = 10
DEFAULT_TTL = 86_400.0


class Command(TypedDict):
    """A queued command's record, as the store's calls return it."""

    id: str
    imei: str
    instruct: str
    data: Any
    state: str
    created: float
    expires: float
    updated: float
    attempts: int
    reply: Any
    """The device's reply (its ack's data) once acked; None before."""


def record(row: tuple) -> Command:
    """The record of a row of L{devicehub.broker.store.schema.RECORD}."""
    id, imei, instruct, data, state, created, expires, updated, attempts, reply = row
    return {
        "id": id, "imei": imei, "instruct": instruct, "data": json.loads(data), "state": state,
        "created": created, "expires": expires, "updated": updated, "attempts": attempts,
        "reply": None if reply is None else json.loads(reply),
    }


class StoreFailed(Exception):
    """A call to the command store failed; the message names the store and says why."""


class NotClaimed(Exception):
    """
    C{sending} a command that this broker may not send (a shared store only): another
    broker is delivering to its device, or it is no longer queued (cancelled, replaced,
    expired meanwhile). The store works; the delivery to that device stops here.
    """


def oneLine(error: Any) -> str:
    """C{error}'s text on one line, for a L{StoreFailed} message."""
    return " ".join(str(error).split())


def redacted(location: str) -> str:
    """C{location} without the password a URL may carry, for messages and logs."""
    location = re.sub(r"^([a-z]+://[^:/@]*):[^@/]*@", r"\1:***@", location)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", location)


class Store:
    """
    The queue of commands for offline devices, its calls run on database threads (never
    in the reactor); each call fails with L{StoreFailed} when the database does. Every
    C{now} is the caller's clock, in seconds since the epoch.
    """

    depth: int
    """Commands queued right now (as of this store's last change)."""
    healthy: bool
    """False when the last call that writes (or any call since) failed."""

    def __init__(self, pool) -> None:
        self.depth = 0
        self.healthy = True
        self._pool = pool
        self._closed = False
        self.onExpired = None
        """Called with the records of the commands a sweep found expired (the broker publishes them)."""

    def _ok(self, value, writes: bool):
        if writes:  # a read that works (on a read-only disk, say) does not make a failing store healthy
            self.healthy = True
        return value

    def _failed(self, failure: Failure):
        self.healthy = False
        if failure.check(StoreFailed):
            return failure
        raise StoreFailed(f"the command store failed: {oneLine(failure.getErrorMessage())}") from failure.value

    def mayHaveWaiting(self, imei: str) -> bool:
        """False when C{imei} surely has no queued (or sent) command, so L{due} would find none."""
        raise NotImplementedError

    def open(self, now: float) -> Deferred:
        """Create (or migrate) the schema; what was "sent" when its broker stopped is queued again."""
        raise NotImplementedError

    def openNow(self, now: float) -> None:
        """
        L{open}, in the calling thread: for a broker's start-up, before the reactor runs,
        so that a store that cannot be opened (or written) stops the start.

        @raise StoreFailed: naming the store and the reason.
        """
        raise NotImplementedError

    def add(
        self, imei: str, instruct: str, data: Any, ttl: float, coalesce: bool, now: float, id: str | None = None
    ) -> "Deferred[str]":
        """
        Queue a command, fire its id; with C{coalesce}, it replaces queued ones with the same instruct.
        With C{id} (a caller's repeated request), a command already stored under it is kept as it
        is and its id fired: one request queues at most one command, through any broker.
        """
        raise NotImplementedError

    def due(self, imei: str, now: float) -> "Deferred[list[Command]]":
        """The commands to deliver to C{imei}, oldest first (expired ones are marked so first)."""
        raise NotImplementedError

    def sending(self, id: str, now: float) -> "Deferred[bool]":
        """Mark a command sent (one more attempt); fires True (a shared store may raise L{NotClaimed})."""
        raise NotImplementedError

    def delivered(self, id: str, acked: bool, now: float, final: bool = False, reply: Any = None) -> Deferred:
        """
        The outcome of sending it: acked (with the device's C{reply}), or queued again
        (failed after MAX_ATTEMPTS, or at once when C{final}: the device's protocol cannot
        carry it); fires with its record afterwards (None if unknown).
        """
        raise NotImplementedError

    def get(self, id: str) -> "Deferred[Command | None]":
        """One command's record, or None."""
        raise NotImplementedError

    def waiting(self, imei: str) -> "Deferred[list[Command]]":
        """The commands queued for C{imei}, oldest first."""
        raise NotImplementedError

    def cancel(self, id: str, now: float) -> "Deferred[Command | None]":
        """Cancel a queued command; fire its record afterwards (None if unknown)."""
        raise NotImplementedError

    def expire(self, now: float) -> "Deferred[int]":
        """Mark every queued command whose ttl passed; fire how many (L{onExpired} gets their records)."""
        raise NotImplementedError

    def _dueAndExpired(self, found: tuple[list[Command], list[Command]]) -> list[Command]:
        commands, expired = found
        self._expired(expired)
        return commands

    def _expired(self, commands: list[Command]) -> int:
        if commands and self.onExpired is not None:
            self.onExpired(commands)
        return len(commands)

    def sweep(self, now: float) -> "Deferred[None]":
        """
        L{expire}, for a periodic caller: it never fails (a failure is logged and the
        store marked failing), so one disk error does not end the sweeps.
        """
        return maybeDeferred(self.expire, now).addCallbacks(
            lambda expired: None,
            lambda failure: log.failure("Sweeping the expired queued commands failed", failure),
        )

    def close(self) -> None:
        """Close the connections (once; a second call does nothing)."""
        if not self._closed:
            self._closed = True
            self._pool.close()
