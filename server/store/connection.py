"""Opening the database (WAL, busy timeout, migrations) and the write transaction."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path

from sqlite_utils import Database

from .schema import migrations

BUSY_TIMEOUT_MS = 10_000
# Waiting for another process's write lock: try again this often. SQLite's own busy handler
# sleeps ever longer (up to 100 ms a time) and so can miss every gap between a round's
# short transactions; polling finds the first one.
LOCK_POLL_SECONDS = 0.001
# A long job pauses this long between its chunked transactions, so people's writes waiting
# for the lock get it in between.
WRITER_GAP_SECONDS = 0.002
SQLITE_INT_MAX = 2**63 - 1

# What a query raises when SQLite cannot carry it out (locked, read-only, disk full...). An
# alias, not a subclass, so that it is the very exception sqlite3 raises and callers outside
# the store can catch it without importing sqlite3. Only OperationalError: a broken constraint
# (IntegrityError, also a sqlite3.DatabaseError) is a bug, not a database that cannot write.
DatabaseError = sqlite3.OperationalError

# DatabaseError messages that mean "cannot write now", not a bug in a query.
_UNWRITABLE = {
    "readonly": "the database file is read-only",
    "disk is full": "the disk is full",
    "database is locked": "the database is busy",
    "disk i/o error": "the disk reported an error",
    "unable to open database": "the database file cannot be opened",
}


class StoreError(Exception):
    """A request the data cannot satisfy (unknown id, duplicate name...): the message is
    meant for the person who made it."""


def is_row_id(value: int) -> bool:
    """Whether `value` can be a row id. Ids come from URLs and forms; sqlite3 raises
    OverflowError for integers past 64 bits instead of simply finding no row."""
    return 0 < value <= SQLITE_INT_MAX


def unwritable_reason(exc: DatabaseError) -> str | None:
    """Why the database cannot be written right now (read-only file, full disk, a lock held
    past the busy timeout), in words for people; None when the error is a bug instead."""
    text = str(exc).lower()
    return next((why for key, why in _UNWRITABLE.items() if key in text), None)


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


_process_locks: dict[str, threading.RLock] = {}
_process_locks_guard = threading.Lock()


def _process_lock(db: Database) -> threading.RLock:
    """One lock per database file in this process: the web server's threads queue for the
    write lock here, in turn, instead of all polling SQLite."""
    lock = getattr(db, "_activelabel_write_lock", None)
    if lock is None:
        path = db.conn.execute("PRAGMA database_list").fetchone()[2]
        with _process_locks_guard:
            lock = _process_locks.setdefault(path, threading.RLock())
        db._activelabel_write_lock = lock
    return lock


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, polling every LOCK_POLL_SECONDS while another process writes, for
    up to BUSY_TIMEOUT_MS."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(LOCK_POLL_SECONDS)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


@contextlib.contextmanager
def write(db: Database) -> Iterator[Database]:
    """One BEGIN IMMEDIATE transaction: takes the write lock up front, so a read followed
    by a write inside it sees no change from another writer in between."""
    conn = db.conn
    if conn.in_transaction:  # nested: join the outer transaction
        yield db
        return
    lock = _process_lock(db)
    if not lock.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
        raise sqlite3.OperationalError("database is locked (by another writer in this process)")
    try:
        _begin_immediate(conn)
        try:
            yield db
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        lock.release()


@contextlib.contextmanager
def read(db: Database) -> Iterator[Database]:
    """One read transaction: every query inside sees the database as of its first read
    (WAL), and writers are never held up by it."""
    conn = db.conn
    if conn.in_transaction:
        yield db
        return
    conn.execute("BEGIN")
    try:
        yield db
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def pause_for_writers() -> None:
    """Between a long job's chunked transactions: let waiting writers in."""
    time.sleep(WRITER_GAP_SECONDS)


ROWS_PER_STATEMENT = 500  # x columns: far below SQLite's 32,766 parameters


def insert_columns(db: Database, table: str, names: Sequence[str],
                   columns: Sequence[Sequence], start: int = 0, stop: int | None = None) -> None:
    """INSERT rows start..stop of `columns` (one sequence per column of `names`) into
    `table`, ROWS_PER_STATEMENT rows to a statement: a multi-row VALUES binds the same values
    as executemany in a fraction of the statement runs (a round's 98,000 predictions took
    0.12-0.16 s instead of 0.21-0.23 s here). Inside the caller's transaction."""
    stop = len(columns[0]) if stop is None else min(stop, len(columns[0]))
    row = "(" + ", ".join("?" * len(names)) + ")"
    head = f"INSERT INTO {table} ({', '.join(names)}) VALUES "
    full = head + ", ".join([row] * ROWS_PER_STATEMENT)
    for first in range(start, stop, ROWS_PER_STATEMENT):
        last = min(stop, first + ROWS_PER_STATEMENT)
        values = list(chain.from_iterable(zip(*(column[first:last] for column in columns))))
        sql = full if last - first == ROWS_PER_STATEMENT else head + ", ".join(
            [row] * (last - first))
        db.conn.execute(sql, values)
