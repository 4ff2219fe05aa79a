"""The life of a job row, the same for rounds, clusterings and quality runs: queued ->
running (with progress and a heartbeat) -> done or failed. Each table has the same columns
for it: status, requested_by, created_at, started_at, finished_at, heartbeat, progress,
message, error. What a job publishes when it is done (a ranking, clusters, findings) is its
own table's business: store/rounds.py, store/clusterings.py, store/quality.py."""

from __future__ import annotations

import time

from sqlite_utils import Database

from .connection import StoreError, is_row_id, now_iso, write

JOB_TABLES = ("rounds", "clusterings", "quality_runs", "auto_label_runs")
ACTIVE = ("queued", "running")


def _table(table: str) -> str:
    if table not in JOB_TABLES:
        raise ValueError(f"{table!r} is not a job table")
    return table


def _one(db: Database, sql: str, params=()) -> dict | None:
    rows = list(db.query(sql, params))
    return rows[0] if rows else None


def queue(db: Database, table: str, requested_by: int | None, **fields) -> tuple[int, bool]:
    """(job id, whether it is new): a job of this kind already queued or running is returned
    instead of a second one, so two clicks on a button queue one job. `fields` are the
    table's own columns (a round's strategy, a clustering's k)."""
    columns = {"status": "queued", "requested_by": requested_by, "created_at": now_iso(),
               "progress": 0, "message": "waiting for the worker", **fields}
    with write(db):
        running = active(db, table)
        if running:
            return running["id"], False
        cursor = db.execute(
            f"INSERT INTO {_table(table)} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' for _ in columns)})",
            list(columns.values()),
        )
    return cursor.lastrowid, True


def get(db: Database, table: str, job_id: int) -> dict | None:
    if not is_row_id(job_id):
        return None
    return _one(db, f"SELECT * FROM {_table(table)} WHERE id = ?", [job_id])


def active(db: Database, table: str) -> dict | None:
    """The job of this kind that is queued or running, if any (there is at most one)."""
    return _one(db, f"SELECT * FROM {_table(table)} WHERE status IN ('queued', 'running')"
                    " ORDER BY id LIMIT 1")


def latest(db: Database, table: str, status: str | None = None) -> dict | None:
    """The newest job of this kind (with `status`: the newest in that status)."""
    if status is None:
        return _one(db, f"SELECT * FROM {_table(table)} ORDER BY id DESC LIMIT 1")
    return _one(db, f"SELECT * FROM {_table(table)} WHERE status = ? ORDER BY id DESC"
                    " LIMIT 1", [status])


def history(db: Database, table: str, limit: int = 50) -> list[dict]:
    """Jobs of this kind, newest first."""
    return list(db.query(f"SELECT * FROM {_table(table)} ORDER BY id DESC LIMIT ?", [limit]))


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


def is_running(db: Database, table: str, job_id: int) -> bool:
    """Whether the job is still running: a job publishes only then (one failed as stale
    meanwhile must not publish over what the page says)."""
    row = db.execute(f"SELECT status FROM {_table(table)} WHERE id = ?", [job_id]).fetchone()
    return row is not None and row[0] == "running"


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
    """Mark a queued or running job failed, with the error for the person who asked. What an
    earlier job of its kind published keeps serving."""
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
