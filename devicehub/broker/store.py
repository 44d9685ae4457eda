"""
The broker's durable queue of commands for offline devices, in SQLite.

Every database call runs on one thread of its own (C{adbapi} with a single
connection), never in the reactor. A command moves::

    queued -> sent -> acked                      the device acked it
                   -> queued                     not acked (timeout, device gone, node died):
                                                 sent again at the device's next login
    queued -> expired                            its ttl passed first
    queued -> failed                             MAX_ATTEMPTS deliveries without an ack
    queued -> cancelled | replaced               DELETE /commands/{id}; a newer "coalesce" one

Delivery is at least once: a command whose ack was lost (or whose broker restarted
while it was "sent") is sent again; an acked one never is.

L{openStore} opens the store that C{--store} names: this one, or for a
C{postgresql://} URL the queue that several brokers share (L{devicehub.broker.pgstore}).
"""

import json
import re
import sqlite3
import uuid
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

log = Logger()

QUEUED, SENT, ACKED, EXPIRED, FAILED, CANCELLED, REPLACED = (
    "queued", "sent", "acked", "expired", "failed", "cancelled", "replaced",
)
MAX_ATTEMPTS = 10
DEFAULT_TTL = 86_400.0

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS commands (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        imei TEXT NOT NULL,
        instruct TEXT NOT NULL,
        data TEXT NOT NULL,
        state TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        updated REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS commands_waiting ON commands (imei, state, seq)",
    "CREATE INDEX IF NOT EXISTS commands_state ON commands (state)",
]
_COLUMNS = "id, imei, instruct, data, state, created, expires, updated, attempts"


def _record(row: tuple) -> dict[str, Any]:
    id, imei, instruct, data, state, created, expires, updated, attempts = row
    return {
        "id": id, "imei": imei, "instruct": instruct, "data": json.loads(data), "state": state,
        "created": created, "expires": expires, "updated": updated, "attempts": attempts,
    }


class StoreFailed(Exception):
    """A call to the command store failed; the message names the store and says why."""


class NotClaimed(Exception):
    """
    C{sending} a command that this broker may not send (a shared store only): another
    broker is delivering to its device, or it is no longer queued (cancelled, replaced,
    expired meanwhile). The store works; the delivery to that device stops here.
    """


def _connected(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


class CommandStore:
    """Queued commands in the SQLite file at C{path} (created by L{open} or L{openNow})."""

    def __init__(self, path: str, reactor) -> None:
        self.path = path
        self.depth = 0
        """Commands queued right now (kept in step with every change)."""
        self.healthy = True
        """False when the last call that writes (or any call since) failed."""
        # Imeis with commands queued or sent (not yet acked), so that the login of any other
        # (nearly all logins) costs no query. Every change that may add or remove an imei
        # reports whether that imei still has one, and L{expire} reloads the whole set, so it
        # holds only devices with commands still waiting. Updated in the order the database
        # thread ran the changes.
        self._waiting: set[str] = set()
        self._loaded = False
        self._pool = adbapi.ConnectionPool(
            "sqlite3", path, check_same_thread=False, cp_min=1, cp_max=1,
            cp_openfun=_connected, cp_reactor=reactor,
        )

    def _run(self, interaction, *args, writes: bool = True) -> Deferred:
        def ok(result):
            if writes:  # a read that works on a read-only disk does not make it healthy
                self.healthy = True
            return result

        def failed(failure):
            self.healthy = False
            raise StoreFailed(f"the command store failed: {failure.getErrorMessage()}") from failure.value

        return self._pool.runInteraction(interaction, *args).addCallbacks(ok, failed)

    @staticmethod
    def _depth(cursor) -> int:
        cursor.execute("SELECT count(*) FROM commands WHERE state = ?", (QUEUED,))
        return cursor.fetchone()[0]

    @staticmethod
    def _stillWaiting(cursor, imei: str | None) -> dict[str, bool]:
        """Whether C{imei} has a command queued or sent, for L{_keep}."""
        if imei is None:
            return {}
        cursor.execute("SELECT 1 FROM commands WHERE imei = ? AND state IN (?, ?) LIMIT 1", (imei, QUEUED, SENT))
        return {imei: cursor.fetchone() is not None}

    @staticmethod
    def _imei(cursor, id: str) -> str | None:
        cursor.execute("SELECT imei FROM commands WHERE id = ?", (id,))
        row = cursor.fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _allWaiting(cursor) -> set[str]:
        cursor.execute("SELECT DISTINCT imei FROM commands WHERE state IN (?, ?)", (QUEUED, SENT))
        return {imei for (imei,) in cursor.fetchall()}

    def _keep(self, result: tuple) -> Any:
        """
        Keep what an interaction returned as C{(depth, value, waiting)}: C{waiting} is
        C{{imei: still waiting}} for the imeis it touched, or the set of all waiting imeis.
        """
        self.depth, value, waiting = result
        if isinstance(waiting, set):
            self._waiting = waiting
            self._loaded = True
        else:
            for imei, still in waiting.items():
                if still:
                    self._waiting.add(imei)
                else:
                    self._waiting.discard(imei)
        return value

    def mayHaveWaiting(self, imei: str) -> bool:
        """False when C{imei} surely has no queued (or sent) command, so L{due} would find none."""
        return not self._loaded or imei in self._waiting

    def _opened(self, cursor, now: float) -> tuple[int, None, set[str]]:
        for statement in _SCHEMA:
            cursor.execute(statement)
        cursor.execute("UPDATE commands SET state = ?, updated = ? WHERE state = ?", (QUEUED, now, SENT))
        return self._depth(cursor), None, self._allWaiting(cursor)

    def open(self, now: float) -> Deferred:
        """Create the table if needed; what was "sent" when the broker stopped is queued again."""
        return self._run(self._opened, now).addCallback(self._keep)

    def openNow(self, now: float) -> None:
        """
        L{open}, in the calling thread: for a broker's start-up, before the reactor runs,
        so that a store that cannot be opened (or written) stops the start.

        @raise StoreFailed: naming the file and the reason.
        """
        try:
            connection = sqlite3.connect(self.path)
            try:
                _connected(connection)
                with connection:  # one transaction, committed
                    opened = self._opened(connection.cursor(), now)
            finally:
                connection.close()
        except sqlite3.Error as e:
            self.healthy = False
            raise StoreFailed(f"cannot open the command store {self.path!r}: {e}") from e
        self._keep(opened)

    def add(self, imei: str, instruct: str, data: Any, ttl: float, coalesce: bool, now: float) -> "Deferred[str]":
        """Queue a command; with C{coalesce}, it replaces queued ones with the same instruct."""
        id = uuid.uuid4().hex

        def interaction(cursor):
            if coalesce:
                cursor.execute(
                    "UPDATE commands SET state = ?, updated = ? WHERE imei = ? AND instruct = ? AND state = ?",
                    (REPLACED, now, imei, instruct, QUEUED),
                )
            cursor.execute(
                f"INSERT INTO commands ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (id, imei, instruct, json.dumps(data), QUEUED, now, now + ttl, now),
            )
            return self._depth(cursor), id, {imei: True}

        return self._run(interaction).addCallback(self._keep)

    def due(self, imei: str, now: float) -> "Deferred[list[dict[str, Any]]]":
        """The commands to deliver to C{imei}, oldest first (expired ones are marked so first)."""

        def interaction(cursor):
            cursor.execute(
                "UPDATE commands SET state = ?, updated = ? WHERE imei = ? AND state = ? AND expires <= ?",
                (EXPIRED, now, imei, QUEUED, now),
            )
            cursor.execute(
                f"SELECT {_COLUMNS} FROM commands WHERE imei = ? AND state = ? ORDER BY seq", (imei, QUEUED)
            )
            commands = [_record(row) for row in cursor.fetchall()]  # before the cursor runs the count
            return self._depth(cursor), commands, self._stillWaiting(cursor, imei)

        return self._run(interaction).addCallback(self._keep)

    def sending(self, id: str, now: float) -> "Deferred[bool]":
        """Mark a command sent (one more attempt); fires True (a shared store may raise L{NotClaimed})."""
        return self._set(id, SENT, now, "attempts = attempts + 1").addCallback(lambda _: True)

    def delivered(self, id: str, acked: bool, now: float, final: bool = False) -> Deferred:
        """
        The outcome of sending it: acked, or queued again (failed after MAX_ATTEMPTS, or at
        once when C{final}: the device's protocol cannot carry it).
        """
        if acked:
            return self._set(id, ACKED, now)

        def interaction(cursor):
            cursor.execute(
                "UPDATE commands SET state = CASE WHEN attempts >= ? OR ? THEN ? ELSE ? END, updated = ? "
                "WHERE id = ? AND state = ?",
                (MAX_ATTEMPTS, final, FAILED, QUEUED, now, id, SENT),
            )
            return self._depth(cursor), None, self._stillWaiting(cursor, self._imei(cursor, id))

        return self._run(interaction).addCallback(self._keep)

    def _set(self, id: str, state: str, now: float, extra: str = "") -> Deferred:
        def interaction(cursor):
            assignments = f"state = ?, updated = ?{', ' + extra if extra else ''}"
            cursor.execute(f"UPDATE commands SET {assignments} WHERE id = ?", (state, now, id))
            return self._depth(cursor), None, self._stillWaiting(cursor, self._imei(cursor, id))

        return self._run(interaction).addCallback(self._keep)

    def get(self, id: str) -> "Deferred[dict[str, Any] | None]":
        """One command's record, or None."""

        def interaction(cursor):
            cursor.execute(f"SELECT {_COLUMNS} FROM commands WHERE id = ?", (id,))
            row = cursor.fetchone()
            return None if row is None else _record(row)

        return self._run(interaction, writes=False)

    def waiting(self, imei: str) -> "Deferred[list[dict[str, Any]]]":
        """The commands queued for C{imei}, oldest first."""

        def interaction(cursor):
            cursor.execute(
                f"SELECT {_COLUMNS} FROM commands WHERE imei = ? AND state = ? ORDER BY seq", (imei, QUEUED)
            )
            return [_record(row) for row in cursor.fetchall()]

        return self._run(interaction, writes=False)

    def cancel(self, id: str, now: float) -> "Deferred[dict[str, Any] | None]":
        """Cancel a queued command; return its record afterwards (None if unknown)."""

        def interaction(cursor):
            cursor.execute(
                "UPDATE commands SET state = ?, updated = ? WHERE id = ? AND state = ?", (CANCELLED, now, id, QUEUED)
            )
            cursor.execute(f"SELECT {_COLUMNS} FROM commands WHERE id = ?", (id,))
            row = cursor.fetchone()
            command = None if row is None else _record(row)
            return self._depth(cursor), command, self._stillWaiting(cursor, command and command["imei"])

        return self._run(interaction).addCallback(self._keep)

    def expire(self, now: float) -> "Deferred[int]":
        """Mark every queued command whose ttl passed; reload which devices have commands waiting."""

        def interaction(cursor):
            cursor.execute(
                "UPDATE commands SET state = ?, updated = ? WHERE state = ? AND expires <= ?",
                (EXPIRED, now, QUEUED, now),
            )
            expired = cursor.rowcount
            return self._depth(cursor), expired, self._allWaiting(cursor)

        return self._run(interaction).addCallback(self._keep)

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
        self._pool.close()


def redacted(location: str) -> str:
    """C{location} without the password a URL may carry, for messages and logs."""
    location = re.sub(r"^([a-z]+://[^:/@]*):[^@/]*@", r"\1:***@", location)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", location)


def isPostgres(location: str) -> bool:
    """Whether C{--store} names a PostgreSQL database (a URL) rather than a SQLite file."""
    return location.startswith(("postgresql://", "postgres://"))


def openStore(location: str, reactor, now: float, *, deliveryTimeout: float | None = None):
    """
    Open the queue of commands for offline devices at C{location} (the value of
    C{--store}): a C{postgresql://USER@HOST[:PORT]/DB} URL, shared by every broker given
    it (L{devicehub.broker.pgstore.PostgresCommandStore}), or else a SQLite file path
    (L{CommandStore}, created if missing). Like L{CommandStore.openNow}, it runs in the
    calling thread: for a broker's start-up, before the reactor runs.

    @param deliveryTimeout: how long the broker waits for a delivery's ack (a claim on a
        shared queue outlives it).
    @raise StoreFailed: naming the store and the reason, in one line.
    """
    if isPostgres(location):
        try:
            from devicehub.broker.pgstore import PostgresCommandStore
        except ImportError as e:
            raise StoreFailed(
                f"cannot open the command store {redacted(location)!r}: {e} (pip install 'psycopg[binary]')"
            ) from None
        store = PostgresCommandStore(location, reactor, deliveryTimeout=deliveryTimeout)
    else:
        store = CommandStore(location, reactor)
    try:
        store.openNow(now)
    except StoreFailed:
        store.close()
        raise
    return store
