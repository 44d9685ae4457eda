"""
The queue of commands for offline devices in PostgreSQL (C{--store postgresql://…}),
shared by every broker given the same URL. States, records and calls are those of
L{devicehub.broker.store.CommandStore}; sharing adds claims:

  - L{due} claims a device's queued commands for this broker (C{claimed_by}, and a
    C{claim_expires} time) and returns them oldest first, unless another broker holds a
    live claim on any of that device's commands: then it returns none. It runs under a
    per-device advisory lock and claims with C{SELECT … FOR UPDATE SKIP LOCKED}, so when
    every broker hears of one login, one of them gets the device's queue and delivers it
    in order, one command at a time, as a single broker does.
  - L{sending} marks a command sent and renews this broker's claims on the device (it
    claims the command again after a delivery that was not acked released it). It raises
    L{NotClaimed} when another broker holds the device or the command is no longer queued
    (cancelled, replaced or expired since L{due}), and then releases this broker's claims.
  - L{delivered} records the outcome and releases the command's claim; after one that
    was not acked (the broker stops there), every claim of this broker on the device.
  - A broker that dies leaves its claims to expire (C{claimTtl}, longer than a
    delivery): a command it had "sent" is then queued again, not acked, by the next
    L{due} for that device on any broker, or by any broker's sweep (L{expire}); then
    another broker delivers it. Delivery stays at least once.

Claims compare the C{now} each call is given, the brokers' clocks: run NTP.
L{mayHaveWaiting} is always true (another broker may have queued a command for any
device), so each login costs one indexed read; one that finds nothing takes no lock.

Every call runs in a thread of an adbapi pool of C{connections} psycopg connections,
never in the reactor thread, and fails with L{StoreFailed} instead of hanging: connect
and statement timeouts (C{timeout}), a TCP user timeout, and a deadline on the call
itself. A connection found lost (the server restarted) is replaced: a call that had not
sent anything on it yet is run once more on a new one.

The schema is created on first use: C{devicehub_schema} holds one row per migration
applied; brokers starting together apply each migration once, under an advisory lock.
"""

import json
import math
import os
import socket
import uuid
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from devicehub.broker.store import (
    ACKED, CANCELLED, EXPIRED, FAILED, MAX_ATTEMPTS, QUEUED, REPLACED, SENT, NotClaimed, StoreFailed, _record, redacted,
)

log = Logger()

DEFAULT_CLAIM_TTL = 60.0
"""Seconds a claim lasts without being renewed (at least three delivery timeouts)."""
DEFAULT_TIMEOUT = 5.0
"""Seconds for a connection and for a statement."""
DEFAULT_CONNECTIONS = 4

_LOCKS = 0x64687562  # the advisory lock class of devicehub ("dhub"); key 0: migrations
_DEVICE_LOCKS = _LOCKS + 1  # keyed by hashtext(imei)
_MIGRATION_TIMEOUT = "300s"

T = "devicehub_commands"
_COLUMNS = "id, imei, instruct, data, state, created, expires, updated, attempts"
_WAITING = f"state IN ('{QUEUED}', '{SENT}')"
_RELEASE = "claimed_by = NULL, claim_expires = NULL"

MIGRATIONS: list[list[str]] = [
    # 1: the queue. Times are seconds since the epoch, as the callers give them.
    [
        f"""CREATE TABLE {T} (
            seq BIGSERIAL PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            imei TEXT NOT NULL,
            instruct TEXT NOT NULL,
            data TEXT NOT NULL,
            state TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            expires DOUBLE PRECISION NOT NULL,
            updated DOUBLE PRECISION NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            claimed_by TEXT,
            claim_expires DOUBLE PRECISION)""",
        f"CREATE INDEX {T}_waiting ON {T} (imei, seq) WHERE {_WAITING}",
        f"CREATE INDEX {T}_expiry ON {T} (expires) WHERE state = '{QUEUED}'",
        f"CREATE INDEX {T}_sent ON {T} (claim_expires) WHERE state = '{SENT}'",
    ],
]
"""The schema, one list of statements per version; append, never edit."""


def _oneLine(error: Any) -> str:
    return " ".join(str(error).split())


def conninfo(url: str, timeout: float) -> str:
    """libpq parameters for C{url}, with devicehub's timeouts unless the URL sets its own."""
    params = conninfo_to_dict(url)
    params.setdefault("connect_timeout", str(max(2, math.ceil(timeout))))  # libpq's minimum is 2
    params.setdefault("tcp_user_timeout", str(round(timeout * 1000)))  # a server gone without a word
    params.setdefault("application_name", "devicehub")
    options = params.get("options", "")
    if "statement_timeout" not in options:
        params["options"] = f"{options} -c statement_timeout={round(timeout * 1000)}".strip()
    return make_conninfo(**params)


def migrate(cursor) -> int:
    """Bring the schema to the newest version, in the caller's transaction; how many migrations ran."""
    cursor.execute(f"SELECT pg_advisory_xact_lock({_LOCKS}, 0)")  # before any DDL: brokers starting together wait here
    cursor.execute(
        "CREATE TABLE IF NOT EXISTS devicehub_schema (version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    cursor.execute("SELECT coalesce(max(version), 0) FROM devicehub_schema")
    current = cursor.fetchone()[0]
    if current > len(MIGRATIONS):
        raise StoreFailed(
            f"its schema is version {current}, newer than this devicehub's ({len(MIGRATIONS)}): upgrade devicehub"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        for statement in MIGRATIONS[version - 1]:
            cursor.execute(statement)
        cursor.execute("INSERT INTO devicehub_schema (version) VALUES (%s)", (version,))
    return len(MIGRATIONS) - current


class _Cursor:
    """A cursor that knows whether a statement of its went through (see L{_transact})."""

    def __init__(self, cursor) -> None:
        self._cursor = cursor
        self.used = False

    def execute(self, query, params=None):
        self._cursor.execute(query, params)
        self.used = True
        return self

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class _Connection(adbapi.Connection):
    """
    adbapi's connection, replacing a lost one quietly (adbapi's own C{cp_reconnect} logs
    errors and keeps a dead connection until a rollback fails).
    """

    def reconnect(self) -> None:
        if self._connection is not None:
            self._pool.disconnect(self._connection)
            self._connection = None
        connection = self._pool.connect()
        if connection.closed or connection.broken:  # lost during an earlier call
            self._pool.disconnect(connection)
            connection = self._pool.connect()
        self._connection = connection

    def rollback(self) -> None:
        # Autocommit: a failed transaction block was already rolled back; only a lost connection is left to drop.
        connection = self._connection
        if connection is not None and (connection.closed or connection.broken):
            self._pool.disconnect(connection)


def _transact(connection: _Connection, interaction, args: tuple, abandoned: list) -> Any:
    if abandoned:  # its caller stopped waiting before a thread was free: do nothing
        raise StoreFailed("the command store failed: the call was abandoned")
    cursor = _Cursor(connection.cursor())
    try:
        return interaction(cursor, *args)
    except psycopg.OperationalError:
        if cursor.used or not connection.broken:
            raise
    # Lost while idle (a server restart, an idle timeout): nothing was sent, so nothing was done.
    connection.reconnect()
    return interaction(_Cursor(connection.cursor()), *args)


class PostgresCommandStore:
    """Queued commands in the PostgreSQL database at C{url}, shared with other brokers."""

    def __init__(
        self, url: str, reactor, *, deliveryTimeout: float | None = None, claimTtl: float | None = None,
        timeout: float = DEFAULT_TIMEOUT, connections: int = DEFAULT_CONNECTIONS, owner: str | None = None,
        clock=None,
    ) -> None:
        """
        @param deliveryTimeout: the broker's wait for a delivery's ack; a claim lasts at
            least three of them (and C{DEFAULT_CLAIM_TTL}) unless C{claimTtl} is given.
        @param timeout: seconds for a connection and for a statement; a call fails after
            three of them (and a second) whatever happens.
        @param owner: this broker's name in claims (default: host, pid and a random part).
        @param clock: what times the calls' deadlines (the reactor by default).
        """
        self.name = redacted(url)
        self.depth = 0
        """Commands queued right now, by every broker (as of this broker's last change)."""
        self.healthy = True
        """False when the last call that writes (or any call since) failed."""
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.claimTtl = claimTtl if claimTtl is not None else max(DEFAULT_CLAIM_TTL, 3 * (deliveryTimeout or 0))
        self.deadline = 3 * max(timeout, 2) + 1
        self._clock = reactor if clock is None else clock
        try:
            self._conninfo = conninfo(url, timeout)
        except psycopg.Error as e:
            raise StoreFailed(f"cannot open the command store {self.name!r}: {_oneLine(e)}") from None
        self._pool = adbapi.ConnectionPool(
            "psycopg", self._conninfo, autocommit=True, cp_min=1, cp_max=connections, cp_reactor=reactor,
            cp_noisy=False, cp_reconnect=False,
        )
        self._pool.connectionFactory = _Connection
        self._closed = False

    def _run(self, interaction, *args, writes: bool = True) -> Deferred:
        """Run C{interaction(cursor, *args)}, which returns C{(depth or None, value)}, in a database thread."""
        abandoned: list[bool] = []
        call = self._pool.runWithConnection(_transact, interaction, args, abandoned)

        def timedOut(result, timeout):
            abandoned.append(True)
            return Failure(StoreFailed(f"the command store failed: no answer from {self.name!r} within {timeout:g} s"))

        call.addTimeout(self.deadline, self._clock, onTimeoutCancel=timedOut)

        def ok(result):
            depth, value = result
            if depth is not None:
                self.depth = depth
            if writes:  # a read that works does not make a failing store healthy
                self.healthy = True
            if isinstance(value, NotClaimed):
                raise value
            return value

        def failed(failure):
            self.healthy = False
            if failure.check(StoreFailed):
                return failure
            raise StoreFailed(f"the command store failed: {_oneLine(failure.getErrorMessage())}") from failure.value

        return call.addCallbacks(ok, failed)

    # -- queries shared by the calls (in a database thread)

    @staticmethod
    def _depth(cursor) -> int:
        cursor.execute(f"SELECT count(*) FROM {T} WHERE state = '{QUEUED}'")
        return cursor.fetchone()[0]

    @staticmethod
    def _lockDevice(cursor, imei: str) -> None:
        """Until the transaction ends, no other broker claims or sends C{imei}'s commands."""
        cursor.execute(f"SELECT pg_advisory_xact_lock({_DEVICE_LOCKS}, hashtext(%s))", (imei,))

    def _holder(self, cursor, imei: str, now: float) -> str | None:
        """Another broker with a live claim on one of C{imei}'s commands, if any."""
        cursor.execute(
            f"SELECT claimed_by FROM {T} WHERE imei = %s AND {_WAITING} AND claimed_by <> %s AND claim_expires > %s LIMIT 1",
            (imei, self.owner, now),
        )
        row = cursor.fetchone()
        return None if row is None else row[0]

    def _release(self, cursor, imei: str) -> None:
        cursor.execute(f"UPDATE {T} SET {_RELEASE} WHERE imei = %s AND claimed_by = %s AND state = '{QUEUED}'",
                       (imei, self.owner))

    @staticmethod
    def _requeueAbandoned(cursor, now: float) -> None:
        """Commands "sent" by a broker whose claim expired (it died): not acked, so queued again."""
        cursor.execute(
            f"UPDATE {T} SET state = CASE WHEN attempts >= %s THEN '{FAILED}' ELSE '{QUEUED}' END, updated = %s, "
            f"{_RELEASE} WHERE state = '{SENT}' AND claim_expires <= %s",
            (MAX_ATTEMPTS, now, now),
        )

    @staticmethod
    def _fetch(cursor, id: str) -> dict[str, Any] | None:
        cursor.execute(f"SELECT {_COLUMNS} FROM {T} WHERE id = %s", (id,))
        row = cursor.fetchone()
        return None if row is None else _record(row)

    # -- the interface of CommandStore

    def mayHaveWaiting(self, imei: str) -> bool:
        """Always True: any broker may have queued a command for C{imei} (L{due} is cheap when none is)."""
        return True

    def _opened(self, cursor, now: float, migrationTimeout: bool = False) -> tuple[int, None]:
        with cursor.connection.transaction():
            if migrationTimeout:
                cursor.execute(f"SET LOCAL statement_timeout = '{_MIGRATION_TIMEOUT}'")
            migrate(cursor)
            self._requeueAbandoned(cursor, now)
            return self._depth(cursor), None

    def open(self, now: float) -> Deferred:
        """Create or migrate the schema; what brokers that died had "sent" is queued again."""
        return self._run(self._opened, now)

    def openNow(self, now: float) -> None:
        """
        L{open}, in the calling thread: for a broker's start-up, before the reactor runs,
        so that a database that cannot be reached (or written) stops the start.

        @raise StoreFailed: naming the database (without its password) and the reason.
        """
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as connection:
                depth, _ = self._opened(_Cursor(connection.cursor()), now, migrationTimeout=True)
        except (psycopg.Error, StoreFailed) as e:
            self.healthy = False
            raise StoreFailed(f"cannot open the command store {self.name!r}: {_oneLine(e)}") from None
        self.depth = depth

    def add(self, imei: str, instruct: str, data: Any, ttl: float, coalesce: bool, now: float) -> "Deferred[str]":
        """Queue a command; with C{coalesce}, it replaces queued ones with the same instruct."""
        id = uuid.uuid4().hex

        def interaction(cursor):
            with cursor.connection.transaction():
                if coalesce:
                    cursor.execute(
                        f"UPDATE {T} SET state = '{REPLACED}', updated = %s, {_RELEASE} "
                        f"WHERE imei = %s AND instruct = %s AND state = '{QUEUED}'",
                        (now, imei, instruct),
                    )
                cursor.execute(
                    f"INSERT INTO {T} ({_COLUMNS}) VALUES (%s, %s, %s, %s, '{QUEUED}', %s, %s, %s, 0)",
                    (id, imei, instruct, json.dumps(data), now, now + ttl, now),
                )
                return self._depth(cursor), id

        return self._run(interaction)

    def due(self, imei: str, now: float) -> "Deferred[list[dict[str, Any]]]":
        """
        Claim C{imei}'s commands and return them, oldest first (expired ones marked so
        first); none while another broker holds a live claim on one of them.
        """

        def interaction(cursor):
            cursor.execute(f"SELECT 1 FROM {T} WHERE imei = %s AND {_WAITING} LIMIT 1", (imei,))
            if cursor.fetchone() is None:  # nearly every login: one read, no lock, no write
                return None, []
            with cursor.connection.transaction():
                self._lockDevice(cursor, imei)
                if self._holder(cursor, imei, now) is not None:
                    return None, []
                cursor.execute(
                    f"UPDATE {T} SET state = '{EXPIRED}', updated = %s, {_RELEASE} "
                    f"WHERE imei = %s AND state = '{QUEUED}' AND expires <= %s",
                    (now, imei, now),
                )
                # Sent by a broker whose claim expired, or by this one without its outcome recorded: not acked.
                cursor.execute(
                    f"UPDATE {T} SET state = CASE WHEN attempts >= %s THEN '{FAILED}' ELSE '{QUEUED}' END, "
                    f"updated = %s, {_RELEASE} WHERE imei = %s AND state = '{SENT}'",
                    (MAX_ATTEMPTS, now, imei),
                )
                cursor.execute(
                    f"UPDATE {T} SET claimed_by = %s, claim_expires = %s WHERE seq IN ("
                    f"SELECT seq FROM {T} WHERE imei = %s AND state = '{QUEUED}' "
                    f"AND (claimed_by IS NULL OR claimed_by = %s OR claim_expires <= %s) FOR UPDATE SKIP LOCKED) "
                    f"RETURNING seq, {_COLUMNS}",
                    (self.owner, now + self.claimTtl, imei, self.owner, now),
                )
                commands = [_record(row[1:]) for row in sorted(cursor.fetchall())]
                return self._depth(cursor), commands

        return self._run(interaction)

    def sending(self, id: str, now: float) -> "Deferred[bool]":
        """
        Mark a command sent (one more attempt), claimed by this broker; fires True.

        @raise NotClaimed: (as the Deferred's failure) another broker holds its device,
            or it is no longer queued; this broker's claims on the device are released.
        """

        def interaction(cursor):
            cursor.execute(f"SELECT imei FROM {T} WHERE id = %s", (id,))
            row = cursor.fetchone()
            if row is None:
                return None, NotClaimed(f"command {id} is unknown")
            imei = row[0]
            with cursor.connection.transaction():
                self._lockDevice(cursor, imei)
                cursor.execute(f"SELECT state FROM {T} WHERE id = %s FOR UPDATE", (id,))
                state = cursor.fetchone()[0]
                holder = self._holder(cursor, imei, now)
                if state != QUEUED or holder is not None:
                    self._release(cursor, imei)
                    why = f"it is {state}" if state != QUEUED else f"broker {holder} is delivering to {imei}"
                    return self._depth(cursor), NotClaimed(f"command {id} cannot be sent: {why}")
                cursor.execute(
                    f"UPDATE {T} SET state = '{SENT}', attempts = attempts + 1, updated = %s, claimed_by = %s, "
                    f"claim_expires = %s WHERE id = %s",
                    (now, self.owner, now + self.claimTtl, id),
                )
                cursor.execute(  # the rest of this delivery: still this broker's
                    f"UPDATE {T} SET claim_expires = %s WHERE imei = %s AND claimed_by = %s AND state = '{QUEUED}'",
                    (now + self.claimTtl, imei, self.owner),
                )
                return self._depth(cursor), True

        return self._run(interaction)

    def delivered(self, id: str, acked: bool, now: float, final: bool = False) -> Deferred:
        """
        The outcome of sending it: acked, or queued again (failed after MAX_ATTEMPTS, or at
        once when C{final}: the device's protocol cannot carry it) if
        this broker still holds its claim; either way its claim is released, and when not
        acked every claim of this broker on the device.
        """

        def interaction(cursor):
            with cursor.connection.transaction():
                if acked:  # whoever holds it now: the device has it
                    cursor.execute(
                        f"UPDATE {T} SET state = '{ACKED}', updated = %s, {_RELEASE} WHERE id = %s AND {_WAITING}",
                        (now, id),
                    )
                else:
                    cursor.execute(
                        f"UPDATE {T} SET state = CASE WHEN attempts >= %s OR %s THEN '{FAILED}' ELSE '{QUEUED}' END, "
                        f"updated = %s, {_RELEASE} WHERE id = %s AND state = '{SENT}' AND claimed_by = %s",
                        (MAX_ATTEMPTS, final, now, id, self.owner),
                    )
                    cursor.execute(
                        f"UPDATE {T} SET {_RELEASE} WHERE imei = (SELECT imei FROM {T} WHERE id = %s) "
                        f"AND claimed_by = %s AND state = '{QUEUED}'",
                        (id, self.owner),
                    )
                return self._depth(cursor), None

        return self._run(interaction)

    def get(self, id: str) -> "Deferred[dict[str, Any] | None]":
        """One command's record, or None."""
        return self._run(lambda cursor: (None, self._fetch(cursor, id)), writes=False)

    def waiting(self, imei: str) -> "Deferred[list[dict[str, Any]]]":
        """The commands queued for C{imei}, oldest first."""

        def interaction(cursor):
            cursor.execute(f"SELECT {_COLUMNS} FROM {T} WHERE imei = %s AND state = '{QUEUED}' ORDER BY seq", (imei,))
            return None, [_record(row) for row in cursor.fetchall()]

        return self._run(interaction, writes=False)

    def cancel(self, id: str, now: float) -> "Deferred[dict[str, Any] | None]":
        """Cancel a queued command; return its record afterwards (None if unknown)."""

        def interaction(cursor):
            with cursor.connection.transaction():
                cursor.execute(
                    f"UPDATE {T} SET state = '{CANCELLED}', updated = %s, {_RELEASE} WHERE id = %s AND state = '{QUEUED}'",
                    (now, id),
                )
                return self._depth(cursor), self._fetch(cursor, id)

        return self._run(interaction)

    def expire(self, now: float) -> "Deferred[int]":
        """
        Mark every queued command whose ttl passed (but those a live broker has claimed:
        it is delivering them now); queue again what dead brokers had sent.
        """

        def interaction(cursor):
            with cursor.connection.transaction():
                cursor.execute(
                    f"UPDATE {T} SET state = '{EXPIRED}', updated = %s, {_RELEASE} WHERE state = '{QUEUED}' "
                    f"AND expires <= %s AND (claimed_by IS NULL OR claim_expires <= %s)",
                    (now, now, now),
                )
                expired = cursor.rowcount
                self._requeueAbandoned(cursor, now)
                return self._depth(cursor), expired

        return self._run(interaction)

    def sweep(self, now: float) -> "Deferred[None]":
        """L{expire}, for a periodic caller: it never fails (a failure is logged and the store marked failing)."""
        return maybeDeferred(self.expire, now).addCallbacks(
            lambda expired: None,
            lambda failure: log.failure("Sweeping the expired queued commands failed", failure),
        )

    def close(self) -> None:
        """Close the connections (once; a second call does nothing)."""
        if not self._closed:
            self._closed = True
            self._pool.close()
