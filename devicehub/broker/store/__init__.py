"""
The broker's durable queue of commands for offline devices (C{--store}).

L{openStore} opens the store that C{--store} names: a SQLite file
(L{devicehub.broker.store.sqlite.CommandStore}), or for a C{postgresql://} URL the queue
that several brokers share (L{devicehub.broker.store.postgres.PostgresCommandStore}).
Both implement L{devicehub.broker.store.interface.Store}; their SQL text is in
L{devicehub.broker.store.schema}.
"""

from devicehub.broker.store.interface import (
    ACKED, CANCELLED, DEFAULT_TTL, EXPIRED, FAILED, MAX_ATTEMPTS, QUEUED, REPLACED, SENT, Command, NotClaimed, Store,
    StoreFailed, redacted,
)
from devicehub.broker.store.sqlite import CommandStore

__all__ = [
    "ACKED", "CANCELLED", "DEFAULT_TTL", "EXPIRED", "FAILED", "MAX_ATTEMPTS", "QUEUED", "REPLACED", "SENT",
    "Command", "CommandStore", "NotClaimed", "Store", "StoreFailed", "isPostgres", "openStore", "redacted",
]


def isPostgres(location: str) -> bool:
    """Whether C{--store} names a PostgreSQL database (a URL) rather than a SQLite file."""
    return location.startswith(("postgresql://", "postgres://"))


def openStore(location: str, reactor, now: float, *, deliveryTimeout: float | None = None) -> Store:
    """
    Open the queue of commands for offline devices at C{location} (the value of
    C{--store}): a C{postgresql://USER@HOST[:PORT]/DB} URL, shared by every broker given
    it (L{devicehub.broker.store.postgres.PostgresCommandStore}), or else a SQLite file
    path (L{CommandStore}, created if missing). Like L{Store.openNow}, it runs in the
    calling thread: for a broker's start-up, before the reactor runs.

    @param deliveryTimeout: how long the broker waits for a delivery's ack (a claim on a
        shared queue outlives it).
    @raise StoreFailed: naming the store and the reason, in one line.
    """
    store: Store
    if isPostgres(location):
        try:
            from devicehub.broker.store.postgres import PostgresCommandStore
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
