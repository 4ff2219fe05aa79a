"""Quality runs (a job's progress and findings) and the admin's keep/drop decisions on
near-duplicate groups."""

from __future__ import annotations

import json
import time

from sqlite_utils import Database

from .connection import StoreError, is_row_id, now_iso, write


def queue_quality_run(db: Database, requested_by: int | None) -> tuple[int, bool]:
    """A new queued run, or the one already queued or running: (id, created)."""
    with write(db):
        row = db.execute(
            "SELECT id FROM quality_runs WHERE status IN ('queued', 'running') ORDER BY id"
            " LIMIT 1"
        ).fetchone()
        if row is not None:
            return row[0], False
        cursor = db.execute(
            "INSERT INTO quality_runs (status, requested_by, created_at, progress)"
            " VALUES ('queued', ?, ?, 0)",
            [requested_by, now_iso()],
        )
    return cursor.lastrowid, True


def start_quality_run(db: Database, run_id: int) -> None:
    with write(db):
        row = get_quality_run(db, run_id)
        if row is None or row["status"] != "queued":
            raise StoreError(f"quality run {run_id} is not queued")
        db.execute(
            "UPDATE quality_runs SET status = 'running', started_at = ?, heartbeat = ?,"
            " message = 'starting' WHERE id = ?",
            [now_iso(), time.time(), run_id],
        )


def report_quality_progress(db: Database, run_id: int, fraction: float, message: str) -> None:
    with write(db):
        db.execute(
            "UPDATE quality_runs SET progress = ?, message = ?, heartbeat = ? WHERE id = ?"
            " AND status = 'running'",
            [max(0.0, min(1.0, fraction)), message, time.time(), run_id],
        )


def finish_quality_run(db: Database, run_id: int, result: dict, message: str = "done") -> None:
    with write(db):
        db.execute(
            "UPDATE quality_runs SET status = 'done', finished_at = ?, progress = 1,"
            " message = ?, result = ? WHERE id = ?",
            [now_iso(), message, json.dumps(result), run_id],
        )


def fail_quality_run(db: Database, run_id: int, error: str) -> None:
    with write(db):
        db.execute(
            "UPDATE quality_runs SET status = 'failed', finished_at = ?, error = ?,"
            " message = 'failed' WHERE id = ? AND status IN ('queued', 'running')",
            [now_iso(), error, run_id],
        )


def fail_stale_quality_runs(db: Database, older_than: float) -> int:
    """Runs left 'running' by a worker that died (no heartbeat for `older_than` seconds)."""
    with write(db):
        cursor = db.execute(
            "UPDATE quality_runs SET status = 'failed', finished_at = ?, message = 'failed',"
            " error = 'the worker stopped during this run' WHERE status = 'running'"
            " AND coalesce(heartbeat, 0) < ?",
            [now_iso(), time.time() - older_than],
        )
    return cursor.rowcount


def get_quality_run(db: Database, run_id: int) -> dict | None:
    if not is_row_id(run_id):
        return None
    rows = list(db.query("SELECT * FROM quality_runs WHERE id = ?", [run_id]))
    return _decoded(rows[0]) if rows else None


def latest_quality_run(db: Database, done_only: bool = False) -> dict | None:
    where = "WHERE status = 'done'" if done_only else ""
    rows = list(db.query(f"SELECT * FROM quality_runs {where} ORDER BY id DESC LIMIT 1"))
    return _decoded(rows[0]) if rows else None


def _decoded(row: dict) -> dict:
    row["result"] = json.loads(row["result"]) if row.get("result") else None
    return row


def decide_duplicate(db: Database, user_id: int, image_id: int, keep: bool) -> None:
    """Keep or drop one image of a duplicate group (appended; the latest decision counts)."""
    with write(db):
        if not is_row_id(image_id) or db.execute(
            "SELECT 1 FROM images WHERE id = ?", [image_id]
        ).fetchone() is None:
            raise StoreError(f"no image with id {image_id}")
        db.execute(
            "INSERT INTO duplicate_decisions (image_id, keep, user_id, created_at)"
            " VALUES (?, ?, ?, ?)",
            [image_id, int(keep), user_id, now_iso()],
        )


def dropped_images(db: Database) -> set[int]:
    """Images the admin chose to drop from their duplicate group."""
    return {
        r[0]
        for r in db.execute(
            "SELECT d.image_id FROM duplicate_decisions d WHERE d.id = (SELECT max(id)"
            " FROM duplicate_decisions e WHERE e.image_id = d.image_id) AND d.keep = 0"
        )
    }
