"""
The broker's durable queue of commands for offline devices, in a SQLite file.

Every database call runs on one thread of its own (C{adbapi} with a single
connection), never in the reactor. The functions C{_name(cursor, ...)} are the
transactions, run on that thread; those that change the queue return
C{(depth, value, waiting)} for L{CommandStore._keep}.
"""

import json
import sqlite3
import uuid
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from devicehub.broker.store.interface import (
    ACKED, CANCELLED, EXPIRED, FAILED, MAX_ATTEMPTS, QUEUED, REPLACED, SENT, Command, Store, StoreFailed, record,
)
from devicehub.broker.store.schema import COLUMNS, RECORD, SQLITE_MIGRATIONS, SQLITE_SCHEMA


def _connected(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def _depth(cursor) -> int:
    cursor.execute("SELECT count(*) FROM commands WHERE state = ?", (QUEUED,))
    return cursor.fetchone()[0]


def _stillWaiting(cursor, imei: str | None) -> dict[str, bool]:
    """Whether C{imei} has a command queued or sent, for L{CommandStore._keep}."""
    if imei is None:
        return {}
    cursor.execute("SELECT 1 FROM commands WHERE imei = ? AND state IN (?, ?) LIMIT 1", (imei, QUEUED, SENT))
    return {imei: cursor.fetchone() is not None}


def _imei(cursor, id: str) -> str | None:
    cursor.execute("SELECT imei FROM commands WHERE id = ?", (id,))
    row = cursor.fetchone()
    return None if row is None else row[0]


def _allWaiting(cursor) -> set[str]:
    cursor.execute("SELECT DISTINCT imei FROM commands WHERE state IN (?, ?)", (QUEUED, SENT))
    return {imei for (imei,) in cursor.fetchall()}


def _fetch(cursor, id: str) -> Command | None:
    cursor.execute(f"SELECT {RECORD} FROM commands WHERE id = ?", (id,))
    row = cursor.fetchone()
    return None if row is None else record(row)


def _queued(cursor, imei: str) -> list[Command]:
    cursor.execute(f"SELECT {RECORD} FROM commands WHERE imei = ? AND state = ? ORDER BY seq", (imei, QUEUED))
    return [record(row) for row in cursor.fetchall()]


def _opened(cursor, now: float) -> tuple[int, None, set[str]]:
    for statement in SQLITE_SCHEMA:
        cursor.execute(statement)
    version = max(1, cursor.execute("PRAGMA user_version").fetchone()[0])
    for migration in SQLITE_MIGRATIONS[version:]:
        for statement in migration:
            cursor.execute(statement)
    cursor.execute(f"PRAGMA user_version = {len(SQLITE_MIGRATIONS)}")
    cursor.execute("UPDATE commands SET state = ?, updated = ? WHERE state = ?", (QUEUED, now, SENT))
    return _depth(cursor), None, _allWaiting(cursor)


def _add(cursor, id: str, imei: str, instruct: str, data: Any, ttl: float, coalesce: bool, now: float):
    cursor.execute("SELECT 1 FROM commands WHERE id = ?", (id,))
    if cursor.fetchone() is not None:  # a repeated request: queued already
        return _depth(cursor), id, {}
    if coalesce:
        cursor.execute(
            "UPDATE commands SET state = ?, updated = ? WHERE imei = ? AND instruct = ? AND state = ?",
            (REPLACED, now, imei, instruct, QUEUED),
        )
    cursor.execute(
        f"INSERT INTO commands ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
        (id, imei, instruct, json.dumps(data), QUEUED, now, now + ttl, now),
    )
    return _depth(cursor), id, {imei: True}


def _due(cursor, imei: str, now: float):
    cursor.execute(
        f"SELECT {RECORD} FROM commands WHERE imei = ? AND state = ? AND expires <= ? ORDER BY seq", (imei, QUEUED, now)
    )
    expired = [{**record(row), "state": EXPIRED, "updated": now} for row in cursor.fetchall()]
    cursor.execute(
        "UPDATE commands SET state = ?, updated = ? WHERE imei = ? AND state = ? AND expires <= ?",
        (EXPIRED, now, imei, QUEUED, now),
    )
    commands = _queued(cursor, imei)  # before the cursor runs the count
    return _depth(cursor), (commands, expired), _stillWaiting(cursor, imei)


def _requeue(cursor, id: str, final: bool, now: float):
    cursor.execute(
        "UPDATE commands SET state = CASE WHEN attempts >= ? OR ? THEN ? ELSE ? END, updated = ? "
        "WHERE id = ? AND state = ?",
        (MAX_ATTEMPTS, final, FAILED, QUEUED, now, id, SENT),
    )
    return _depth(cursor), _fetch(cursor, id), _stillWaiting(cursor, _imei(cursor, id))


def _set(cursor, id: str, state: str, now: float, extra: str, *values):
    assignments = f"state = ?, updated = ?{', ' + extra if extra else ''}"
    cursor.execute(f"UPDATE commands SET {assignments} WHERE id = ?", (state, now, *values, id))
    return _depth(cursor), _fetch(cursor, id), _stillWaiting(cursor, _imei(cursor, id))


def _cancel(cursor, id: str, now: float):
    cursor.execute(
        "UPDATE commands SET state = ?, updated = ? WHERE id = ? AND state = ?", (CANCELLED, now, id, QUEUED)
    )
    command = _fetch(cursor, id)
    return _depth(cursor), command, _stillWaiting(cursor, command and command["imei"])


def _expire(cursor, now: float):
    cursor.execute(f"SELECT {RECORD} FROM commands WHERE state = ? AND expires <= ? ORDER BY seq", (QUEUED, now))
    expired = [{**record(row), "state": EXPIRED, "updated": now} for row in cursor.fetchall()]
    cursor.execute(
        "UPDATE commands SET state = ?, updated = ? WHERE state = ? AND expires <= ?",
        (EXPIRED, now, QUEUED, now),
    )
    return _depth(cursor), expired, _allWaiting(cursor)


class CommandStore(Store):
    """
    Queued commands in the SQLite file at C{path} (created by L{open} or L{openNow}).

    A command moves::

        queued -> sent -> acked                      the device acked it
                       -> queued                     not acked (timeout, device gone, node died):
                                                     sent again at the device's next login
        queued -> expired                            its ttl passed first
        queued -> failed                             MAX_ATTEMPTS deliveries without an ack
        queued -> cancelled | replaced               DELETE /commands/{id}; a newer "coalesce" one

    Delivery is at least once: a command whose ack was lost (or whose broker restarted
    while it was "sent") is sent again; an acked one never is.
    """

    def __init__(self, path: str, reactor) -> None:
        super().__init__(adbapi.ConnectionPool(
            "sqlite3", path, check_same_thread=False, cp_min=1, cp_max=1,
            cp_openfun=_connected, cp_reactor=reactor,
        ))
        self.path = path
        # Imeis with commands queued or sent (not yet acked), so that the login of any other
        # (nearly all logins) costs no query. Every change that may add or remove an imei
        # reports whether that imei still has one, and L{expire} reloads the whole set, so it
        # holds only devices with commands still waiting. Updated in the order the database
        # thread ran the changes.
        self._waiting: set[str] = set()
        self._loaded = False

    def _run(self, interaction, *args, writes: bool = True) -> Deferred:
        return self._pool.runInteraction(interaction, *args).addCallbacks(self._ok, self._failed, (writes,))

    def _change(self, interaction, *args) -> Deferred:
        """L{_run} a transaction that returns C{(depth, value, waiting)}; fire its value."""
        return self._run(interaction, *args).addCallback(self._keep)

    def _keep(self, result: tuple) -> Any:
        """
        Keep what a transaction returned as C{(depth, value, waiting)}: C{waiting} is
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

    def open(self, now: float) -> Deferred:
        """Create the table if needed; what was "sent" when the broker stopped is queued again."""
        return self._change(_opened, now)

    def openNow(self, now: float) -> None:
        """
        L{open}, in the calling thread, before the reactor runs.

        @raise StoreFailed: naming the file and the reason.
        """
        try:
            connection = sqlite3.connect(self.path)
            try:
                _connected(connection)
                with connection:  # one transaction, committed
                    opened = _opened(connection.cursor(), now)
            finally:
                connection.close()
        except sqlite3.Error as e:
            self.healthy = False
            raise StoreFailed(f"cannot open the command store {self.path!r}: {e}") from e
        self._keep(opened)

    def add(
        self, imei: str, instruct: str, data: Any, ttl: float, coalesce: bool, now: float, id: str | None = None
    ) -> "Deferred[str]":
        """Queue a command (L{Store.add}); with C{coalesce}, it replaces queued ones with the same instruct."""
        return self._change(_add, id or uuid.uuid4().hex, imei, instruct, data, ttl, coalesce, now)

    def due(self, imei: str, now: float) -> "Deferred[list[Command]]":
        """The commands to deliver to C{imei}, oldest first (expired ones are marked so first, L{onExpired} told)."""
        return self._change(_due, imei, now).addCallback(self._dueAndExpired)

    def sending(self, id: str, now: float) -> "Deferred[bool]":
        """Mark a command sent (one more attempt); fires True."""
        return self._change(_set, id, SENT, now, "attempts = attempts + 1").addCallback(lambda _: True)

    def delivered(self, id: str, acked: bool, now: float, final: bool = False, reply: Any = None) -> Deferred:
        """Acked (with C{reply}), or queued again (failed after MAX_ATTEMPTS, or at once when C{final}); fire its record."""
        if acked:
            return self._change(_set, id, ACKED, now, "reply = ?", json.dumps(reply))
        return self._change(_requeue, id, final, now)

    def get(self, id: str) -> "Deferred[Command | None]":
        """One command's record, or None."""
        return self._run(_fetch, id, writes=False)

    def waiting(self, imei: str) -> "Deferred[list[Command]]":
        """The commands queued for C{imei}, oldest first."""
        return self._run(_queued, imei, writes=False)

    def cancel(self, id: str, now: float) -> "Deferred[Command | None]":
        """Cancel a queued command; return its record afterwards (None if unknown)."""
        return self._change(_cancel, id, now)

    def expire(self, now: float) -> "Deferred[int]":
        """Mark every queued command whose ttl passed; reload which devices have commands waiting."""
        return self._change(_expire, now).addCallback(self._expired)
