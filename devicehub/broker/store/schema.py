"""
The command stores' tables, as SQL text: SQLite's (created if missing) and
PostgreSQL's versioned migrations (run by L{devicehub.broker.store.postgres.migrate}).
"""

from devicehub.broker.store.interface import QUEUED, SENT

COLUMNS = "id, imei, instruct, data, state, created, expires, updated, attempts"
"""The columns a new command is inserted with."""
RECORD = COLUMNS + ", reply"
"""A command's columns, in the order of L{devicehub.broker.store.interface.record}."""

SQLITE_SCHEMA = [
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
"""SQLite's schema, run at every open (then L{SQLITE_MIGRATIONS} past the file's C{user_version})."""

SQLITE_MIGRATIONS: list[list[str]] = [
    [],  # 1: the table above
    ["ALTER TABLE commands ADD COLUMN reply TEXT"],  # 2: the device's reply to an acked command (JSON)
]
"""SQLite's changes since the first schema, one list per C{PRAGMA user_version}; append, never edit."""

T = "devicehub_commands"
"""PostgreSQL's table of commands."""
WAITING = f"state IN ('{QUEUED}', '{SENT}')"
"""The condition of a command still waiting for its ack."""

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
        f"CREATE INDEX {T}_waiting ON {T} (imei, seq) WHERE {WAITING}",
        f"CREATE INDEX {T}_expiry ON {T} (expires) WHERE state = '{QUEUED}'",
        f"CREATE INDEX {T}_sent ON {T} (claim_expires) WHERE state = '{SENT}'",
    ],
    # 2: the device's reply to an acked command (JSON)
    [f"ALTER TABLE {T} ADD COLUMN reply TEXT"],
]
"""PostgreSQL's schema, one list of statements per version; append, never edit."""
