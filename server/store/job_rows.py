"""The life of a job row, shared by rounds, clusterings and quality runs: queued -> running
(with progress and a heartbeat) -> done or failed. Each table has the same columns for it:
status, started_at, finished_at, heartbeat, progress, message, error."""

from __future__ import annotations

import time

from sqlite_utils import Database

from .connection import StoreError, now_iso, write

JOB_TABLES = ("rounds", "clusterings", "quality_runs")


def _table(table: str) -> str:
    if table not in JOB_TABLES:
        raise ValueError(f"{table!r} is not a job table")
    return table


def start(db: Database, table: str, job_id: int, noun: str) -> None:
    """queued -> running; anything else is refused (a duplicate job, or one failed meanwhile)."""
    with write(db):
        row = db.execute(f"SELECT status FROM {_table(table)} WHERE id = ?", [job_id]).fetchone()
        if row is None:
            raise StoreError(f"no {noun} {job_id}")
        if row[0] != "queued":
            raise StoreError(f"{noun} {job_id} is {row[0]}, not queued")
        db.execute(
            f"UPDATE {table} SET status = 'running', started_at = ?, heartbeat = ?,"
            " progress = 0, message = 'starting' WHERE id = ?",
            [now_iso(), time.time(), job_id],
        )


def report(db: Database, table: str, job_id: int, progress: float, message: str) -> None:
    """Progress (clamped to 0..1) and what is being done, while it runs; also a heartbeat."""
    with write(db):
        db.execute(
            f"UPDATE {_table(table)} SET progress = ?, message = ?, heartbeat = ? WHERE id = ?"
            " AND status = 'running'",
            [max(0.0, min(1.0, progress)), message, time.time(), job_id],
        )


def heartbeat(db: Database, table: str, job_id: int) -> None:
    """The job's worker is alive (between progress reports)."""
    with write(db):
        db.execute(f"UPDATE {_table(table)} SET heartbeat = ? WHERE id = ? AND status = 'running'",
                   [time.time(), job_id])


def fail(db: Database, table: str, job_id: int, error: str) -> None:
    """Mark a queued or running job failed, with the error for the person who asked."""
    with write(db):
        db.execute(
            f"UPDATE {_table(table)} SET status = 'failed', error = ?, finished_at = ?,"
            " message = 'failed' WHERE id = ? AND status IN ('queued', 'running')",
            [error, now_iso(), job_id],
        )


def fail_stale(db: Database, table: str, stale_seconds: float, error: str) -> list[int]:
    """Jobs marked running whose worker stopped reporting (killed, crashed) for
    `stale_seconds`: failed with `error`. Returns their ids."""
    cutoff = time.time() - stale_seconds
    with write(db):
        ids = [r[0] for r in db.execute(
            f"SELECT id FROM {_table(table)} WHERE status = 'running'"
            " AND coalesce(heartbeat, 0) < ?",
            [cutoff],
        )]
        for job_id in ids:
            db.execute(
                f"UPDATE {table} SET status = 'failed', finished_at = ?, message = 'failed',"
                " error = ? WHERE id = ?",
                [now_iso(), error, job_id],
            )
    return ids
