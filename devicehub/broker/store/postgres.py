"""
The queue of commands for offline devices in PostgreSQL (C{--store postgresql://…}),
shared by every broker given the same URL. States, records and calls are those of
L{devicehub.broker.store.interface.Store}; sharing adds claims:

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
sent anything on it yet is run once more on a new one (L{devicehub.broker.store.pgconnection}).

The schema is created on first use: C{devicehub_schema} holds one row per migration
applied; brokers starting together apply each migration once, under an advisory lock.

The functions C{_name(cursor, ...)} are the transactions, run on a pool's thread; each
returns C{(depth or None, value)}.
"""

import json
import os
import socket
import uuid
from typing import Any

import psycopg
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from devicehub.broker.store.interface import (
    ACKED, CANCELLED, EXPIRED, FAILED, MAX_ATTEMPTS, QUEUED, REPLACED, SENT, Command, NotClaimed, Store, StoreFailed,
    oneLine, record, redacted,
)
from devicehub.broker.store.pgconnection import LOCKS, MIGRATION_TIMEOUT, Connection, Cursor, conninfo, migrate, transact
from devicehub.broker.store.schema import COLUMNS, RECORD, WAITING as _WAITING, T

DEFAULT_CLAIM_TTL = 60.0
"""Seconds a claim lasts without being renewed (at least three delivery timeouts)."""
DEFAULT_TIMEOUT = 5.0
"""Seconds for a connection and for a statement."""
DEFAULT_CONNECTIONS = 4

_DEVICE_LOCKS = LOCKS + 1  # keyed by hashtext(imei)
_RELEASE = "claimed_by = NULL, claim_expires = NULL"
_REQUEUE = f"state = CASE WHEN attempts >= %s THEN '{FAILED}' ELSE '{QUEUED}' END, updated = %s, {_RELEASE}"
"""A "sent" command not acked: queued again, or failed after MAX_ATTEMPTS."""


def _depth(cursor) -> int:
    cursor.execute(f"SELECT count(*) FROM {T} WHERE state = '{QUEUED}'")
    return cursor.fetchone()[0]


def _lockDevice(cursor, imei: str) -> None:
    """Until the transaction ends, no other broker claims or sends C{imei}'s commands."""
    cursor.execute(f"SELECT pg_advisory_xact_lock({_DEVICE_LOCKS}, hashtext(%s))", (imei,))


def _holder(cursor, owner: str, imei: str, now: float) -> str | None:
    """A broker other than C{owner} with a live claim on one of C{imei}'s commands, if any."""
    cursor.execute(
        f"SELECT claimed_by FROM {T} WHERE imei = %s AND {_WAITING} AND claimed_by <> %s AND claim_expires > %s LIMIT 1",
        (imei, owner, now),
    )
    row = cursor.fetchone()
    return None if row is None else row[0]


def _release(cursor, owner: str, imei: str) -> None:
    cursor.execute(f"UPDATE {T} SET {_RELEASE} WHERE imei = %s AND claimed_by = %s AND state = '{QUEUED}'", (imei, owner))


def _requeueAbandoned(cursor, now: float) -> None:
    """Commands "sent" by a broker whose claim expired (it died): not acked, so queued again."""
    cursor.execute(f"UPDATE {T} SET {_REQUEUE} WHERE state = '{SENT}' AND claim_expires <= %s", (MAX_ATTEMPTS, now, now))


def _fetch(cursor, id: str) -> Command | None:
    cursor.execute(f"SELECT {RECORD} FROM {T} WHERE id = %s", (id,))
    row = cursor.fetchone()
    return None if row is None else record(row)


def _get(cursor, id: str) -> tuple[None, Command | None]:
    return None, _fetch(cursor, id)


def _queued(cursor, imei: str) -> tuple[None, list[Command]]:
    cursor.execute(f"SELECT {RECORD} FROM {T} WHERE imei = %s AND state = '{QUEUED}' ORDER BY seq", (imei,))
    return None, [record(row) for row in cursor.fetchall()]


def _opened(cursor, now: float, migrationTimeout: bool = False) -> tuple[int, None]:
    with cursor.connection.transaction():
        if migrationTimeout:
            cursor.execute(f"SET LOCAL statement_timeout = '{MIGRATION_TIMEOUT}'")
        migrate(cursor)
        _requeueAbandoned(cursor, now)
        return _depth(cursor), None


def _add(cursor, id: str, imei: str, instruct: str, data: Any, ttl: float, coalesce: bool, now: float):
    with cursor.connection.transaction():
        cursor.execute(f"SELECT 1 FROM {T} WHERE id = %s", (id,))
        if cursor.fetchone() is not None:  # a repeated request: queued already
            return _depth(cursor), id
        if coalesce:
            cursor.execute(
                f"UPDATE {T} SET state = '{REPLACED}', updated = %s, {_RELEASE} "
                f"WHERE imei = %s AND instruct = %s AND state = '{QUEUED}' AND id <> %s",
                (now, imei, instruct, id),
            )
        # Two brokers may take one repeated request at the same time: the second insert is a no-op.
        cursor.execute(
            f"INSERT INTO {T} ({COLUMNS}) VALUES (%s, %s, %s, %s, '{QUEUED}', %s, %s, %s, 0) ON CONFLICT (id) DO NOTHING",
            (id, imei, instruct, json.dumps(data), now, now + ttl, now),
        )
        return _depth(cursor), id


def _due(cursor, owner: str, claimTtl: float, imei: str, now: float):
    cursor.execute(f"SELECT 1 FROM {T} WHERE imei = %s AND {_WAITING} LIMIT 1", (imei,))
    if cursor.fetchone() is None:  # nearly every login: one read, no lock, no write
        return None, ([], [])
    with cursor.connection.transaction():
        _lockDevice(cursor, imei)
        if _holder(cursor, owner, imei, now) is not None:
            return None, ([], [])
        cursor.execute(
            f"UPDATE {T} SET state = '{EXPIRED}', updated = %s, {_RELEASE} "
            f"WHERE imei = %s AND state = '{QUEUED}' AND expires <= %s RETURNING seq, {RECORD}",
            (now, imei, now),
        )
        expired = [record(row[1:]) for row in sorted(cursor.fetchall())]
        # Sent by a broker whose claim expired, or by this one without its outcome recorded: not acked.
        cursor.execute(f"UPDATE {T} SET {_REQUEUE} WHERE imei = %s AND state = '{SENT}'", (MAX_ATTEMPTS, now, imei))
        cursor.execute(
            f"UPDATE {T} SET claimed_by = %s, claim_expires = %s WHERE seq IN ("
            f"SELECT seq FROM {T} WHERE imei = %s AND state = '{QUEUED}' "
            f"AND (claimed_by IS NULL OR claimed_by = %s OR claim_expires <= %s) FOR UPDATE SKIP LOCKED) "
            f"RETURNING seq, {RECORD}",
            (owner, now + claimTtl, imei, owner, now),
        )
        commands = [record(row[1:]) for row in sorted(cursor.fetchall())]
        return _depth(cursor), (commands, expired)


def _sending(cursor, owner: str, claimTtl: float, id: str, now: float):
    cursor.execute(f"SELECT imei FROM {T} WHERE id = %s", (id,))
    row = cursor.fetchone()
    if row is None:
        return None, NotClaimed(f"command {id} is unknown")
    imei = row[0]
    with cursor.connection.transaction():
        _lockDevice(cursor, imei)
        cursor.execute(f"SELECT state FROM {T} WHERE id = %s FOR UPDATE", (id,))
        state = cursor.fetchone()[0]
        holder = _holder(cursor, owner, imei, now)
        if state != QUEUED or holder is not None:
            _release(cursor, owner, imei)
            why = f"it is {state}" if state != QUEUED else f"broker {holder} is delivering to {imei}"
            return _depth(cursor), NotClaimed(f"command {id} cannot be sent: {why}")
        cursor.execute(
            f"UPDATE {T} SET state = '{SENT}', attempts = attempts + 1, updated = %s, claimed_by = %s, "
            f"claim_expires = %s WHERE id = %s",
            (now, owner, now + claimTtl, id),
        )
        cursor.execute(  # the rest of this delivery: still this broker's
            f"UPDATE {T} SET claim_expires = %s WHERE imei = %s AND claimed_by = %s AND state = '{QUEUED}'",
            (now + claimTtl, imei, owner),
        )
        return _depth(cursor), True


def _delivered(cursor, owner: str, id: str, acked: bool, now: float, final: bool, reply: str):
    with cursor.connection.transaction():
        if acked:  # whoever holds it now: the device has it
            cursor.execute(
                f"UPDATE {T} SET state = '{ACKED}', updated = %s, reply = %s, {_RELEASE} WHERE id = %s AND {_WAITING}",
                (now, reply, id),
            )
        else:
            cursor.execute(
                f"UPDATE {T} SET state = CASE WHEN attempts >= %s OR %s THEN '{FAILED}' ELSE '{QUEUED}' END, "
                f"updated = %s, {_RELEASE} WHERE id = %s AND state = '{SENT}' AND claimed_by = %s",
                (MAX_ATTEMPTS, final, now, id, owner),
            )
            cursor.execute(
                f"UPDATE {T} SET {_RELEASE} WHERE imei = (SELECT imei FROM {T} WHERE id = %s) "
                f"AND claimed_by = %s AND state = '{QUEUED}'",
                (id, owner),
            )
        return _depth(cursor), _fetch(cursor, id)


def _cancel(cursor, id: str, now: float):
    with cursor.connection.transaction():
        cursor.execute(
            f"UPDATE {T} SET state = '{CANCELLED}', updated = %s, {_RELEASE} WHERE id = %s AND state = '{QUEUED}'",
            (now, id),
        )
        return _depth(cursor), _fetch(cursor, id)


def _expire(cursor, now: float):
    with cursor.connection.transaction():
        cursor.execute(
            f"UPDATE {T} SET state = '{EXPIRED}', updated = %s, {_RELEASE} WHERE state = '{QUEUED}' "
            f"AND expires <= %s AND (claimed_by IS NULL OR claim_expires <= %s) RETURNING seq, {RECORD}",
            (now, now, now),
        )
        expired = [record(row[1:]) for row in sorted(cursor.fetchall())]
        _requeueAbandoned(cursor, now)
        return _depth(cursor), expired


class PostgresCommandStore(Store):
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
        try:
            self._conninfo = conninfo(url, timeout)
        except psycopg.Error as e:
            raise StoreFailed(f"cannot open the command store {self.name!r}: {oneLine(e)}") from None
        pool = adbapi.ConnectionPool(
            "psycopg", self._conninfo, autocommit=True, cp_min=1, cp_max=connections, cp_reactor=reactor,
            cp_noisy=False, cp_reconnect=False,
        )
        pool.connectionFactory = Connection
        super().__init__(pool)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.claimTtl = claimTtl if claimTtl is not None else max(DEFAULT_CLAIM_TTL, 3 * (deliveryTimeout or 0))
        self.deadline = 3 * max(timeout, 2) + 1
        self._clock = reactor if clock is None else clock

    def _run(self, interaction, *args, writes: bool = True) -> Deferred:
        """Run C{interaction(cursor, *args)}, which returns C{(depth or None, value)}, in a database thread."""
        abandoned: list[bool] = []
        call = self._pool.runWithConnection(transact, interaction, args, abandoned)

        def timedOut(result, timeout):
            abandoned.append(True)
            return Failure(StoreFailed(f"the command store failed: no answer from {self.name!r} within {timeout:g} s"))

        call.addTimeout(self.deadline, self._clock, onTimeoutCancel=timedOut)

        def ok(result):
            depth, value = result
            if depth is not None:
                self.depth = depth
            value = self._ok(value, writes)
            if isinstance(value, NotClaimed):
                raise value
            return value

        return call.addCallbacks(ok, self._failed)

    def mayHaveWaiting(self, imei: str) -> bool:
        """Always True: any broker may have queued a command for C{imei} (L{due} is cheap when none is)."""
        return True

    def open(self, now: float) -> Deferred:
        """Create or migrate the schema; what brokers that died had "sent" is queued again."""
        return self._run(_opened, now)

    def openNow(self, now: float) -> None:
        """
        L{open}, in the calling thread, before the reactor runs.

        @raise StoreFailed: naming the database (without its password) and the reason.
        """
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as connection:
                depth, _ = _opened(Cursor(connection.cursor()), now, migrationTimeout=True)
        except (psycopg.Error, StoreFailed) as e:
            self.healthy = False
            raise StoreFailed(f"cannot open the command store {self.name!r}: {oneLine(e)}") from None
        self.depth = depth

    def add(
        self, imei: str, instruct: str, data: Any, ttl: float, coalesce: bool, now: float, id: str | None = None
    ) -> "Deferred[str]":
        """Queue a command (L{Store.add}); with C{coalesce}, it replaces queued ones with the same instruct."""
        return self._run(_add, id or uuid.uuid4().hex, imei, instruct, data, ttl, coalesce, now)

    def due(self, imei: str, now: float) -> "Deferred[list[Command]]":
        """
        Claim C{imei}'s commands and return them, oldest first (expired ones marked so
        first); none while another broker holds a live claim on one of them.
        """
        return self._run(_due, self.owner, self.claimTtl, imei, now).addCallback(self._dueAndExpired)

    def sending(self, id: str, now: float) -> "Deferred[bool]":
        """
        Mark a command sent (one more attempt), claimed by this broker; fires True.

        @raise NotClaimed: (as the Deferred's failure) another broker holds its device,
            or it is no longer queued; this broker's claims on the device are released.
        """
        return self._run(_sending, self.owner, self.claimTtl, id, now)

    def delivered(self, id: str, acked: bool, now: float, final: bool = False, reply: Any = None) -> Deferred:
        """
        The outcome of sending it: acked, or queued again (failed after MAX_ATTEMPTS, or at
        once when C{final}) if this broker still holds its claim; either way its claim is
        released, and when not acked every claim of this broker on the device. Fires with its record.
        """
        return self._run(_delivered, self.owner, id, acked, now, final, json.dumps(reply))

    def get(self, id: str) -> "Deferred[Command | None]":
        """One command's record, or None."""
        return self._run(_get, id, writes=False)

    def waiting(self, imei: str) -> "Deferred[list[Command]]":
        """The commands queued for C{imei}, oldest first."""
        return self._run(_queued, imei, writes=False)

    def cancel(self, id: str, now: float) -> "Deferred[Command | None]":
        """Cancel a queued command; return its record afterwards (None if unknown)."""
        return self._run(_cancel, id, now)

    def expire(self, now: float) -> "Deferred[int]":
        """
        Mark every queued command whose ttl passed (but those a live broker has claimed:
        it is delivering them now); queue again what dead brokers had sent.
        """
        return self._run(_expire, now).addCallback(self._expired)
