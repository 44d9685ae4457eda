"""
PostgreSQL connections for L{devicehub.broker.store.postgres}: libpq parameters with
devicehub's timeouts, an adbapi connection that replaces a lost one quietly, the runner
of one call on a pool's thread (L{transact}), and the schema's migrations (L{migrate}).
"""

import math
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from twisted.enterprise import adbapi

from devicehub.broker.store.interface import StoreFailed
from devicehub.broker.store.schema import MIGRATIONS

LOCKS = 0x64687562
"""The advisory lock class of devicehub ("dhub"); key 0: migrations."""
MIGRATION_TIMEOUT = "300s"


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
    cursor.execute(f"SELECT pg_advisory_xact_lock({LOCKS}, 0)")  # before any DDL: brokers starting together wait here
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


class Cursor:
    """A cursor that knows whether a statement of its went through (see L{transact})."""

    def __init__(self, cursor) -> None:
        self._cursor = cursor
        self.used = False

    def execute(self, query, params=None):
        """Run C{query}, noting that something was sent."""
        self._cursor.execute(query, params)
        self.used = True
        return self

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class Connection(adbapi.Connection):
    """
    adbapi's connection, replacing a lost one quietly (adbapi's own C{cp_reconnect} logs
    errors and keeps a dead connection until a rollback fails).
    """

    def reconnect(self) -> None:
        """Drop this connection and open another (twice, if the pool had kept a lost one)."""
        if self._connection is not None:
            self._pool.disconnect(self._connection)
            self._connection = None
        connection = self._pool.connect()
        if connection.closed or connection.broken:  # lost during an earlier call
            self._pool.disconnect(connection)
            connection = self._pool.connect()
        self._connection = connection

    def rollback(self) -> None:
        """Drop a lost connection (autocommit: a failed transaction block was already rolled back)."""
        connection = self._connection
        if connection is not None and (connection.closed or connection.broken):
            self._pool.disconnect(connection)


def transact(connection: Connection, interaction, args: tuple, abandoned: list) -> Any:
    """
    C{interaction(cursor, *args)} on C{connection}, in a pool's thread; run once more on a
    new connection when the old one was found lost before anything was sent on it.
    """
    if abandoned:  # its caller stopped waiting before a thread was free: do nothing
        raise StoreFailed("the command store failed: the call was abandoned")
    cursor = Cursor(connection.cursor())
    try:
        return interaction(cursor, *args)
    except psycopg.OperationalError:
        if cursor.used or not connection.broken:
            raise
    # Lost while idle (a server restart, an idle timeout): nothing was sent, so nothing was done.
    connection.reconnect()
    return interaction(Cursor(connection.cursor()), *args)
