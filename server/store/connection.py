"""Opening the database (WAL, busy timeout, migrations) and the write transaction."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from .schema import migrations

BUSY_TIMEOUT_MS = 10_000
SQLITE_INT_MAX = 2**63 - 1


class StoreError(Exception):
    """A request the data cannot satisfy (unknown id, duplicate name...): the message is
    meant for the person who made it."""


def is_row_id(value: int) -> bool:
    """Whether `value` can be a row id. Ids come from URLs and forms; sqlite3 raises
    OverflowError for integers past 64 bits instead of simply finding no row."""
    return 0 < value <= SQLITE_INT_MAX


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def connect(path: str | Path, migrate: bool = True) -> Database:
    """Open the project database. WAL lets annotators read while one of them writes;
    the busy timeout makes writers wait for each other instead of failing."""
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise StoreError(f"{path}: could not switch the database to WAL mode (got {mode})")
    # NORMAL is durable across a crash of the process (the WAL is on disk before COMMIT
    # returns); only a power cut can lose the last transactions.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    db = Database(conn)
    if migrate:
        migrations.apply(db)
    return db


@contextlib.contextmanager
def write(db: Database) -> Iterator[Database]:
    """One BEGIN IMMEDIATE transaction: takes the write lock up front, so a read followed
    by a write inside it sees no change from another writer in between."""
    conn = db.conn
    if conn.in_transaction:  # nested: join the outer transaction
        yield db
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
