"""Quality runs (a job's progress and findings) and the admin's keep/drop decisions on
near-duplicate groups."""

from __future__ import annotations

import json

from sqlite_utils import Database

from . import job_rows
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
    job_rows.start(db, "quality_runs", run_id, "quality run")


def report_quality_progress(db: Database, run_id: int, fraction: float, message: str) -> None:
    job_rows.report(db, "quality_runs", run_id, fraction, message)


def finish_quality_run(db: Database, run_id: int, result: dict, message: str = "done") -> None:
    with write(db):
        db.execute(
            "UPDATE quality_runs SET status = 'done', finished_at = ?, progress = 1,"
            " message = ?, result = ? WHERE id = ?",
            [now_iso(), message, json.dumps(result), run_id],
        )


def fail_quality_run(db: Database, run_id: int, error: str) -> None:
    job_rows.fail(db, "quality_runs", run_id, error)


def fail_stale_quality_runs(db: Database, older_than: float) -> int:
    """Runs left 'running' by a worker that died (no heartbeat for `older_than` seconds)."""
    return len(job_rows.fail_stale(db, "quality_runs", older_than,
                                   "the worker stopped during this run"))


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


def decided_images(db: Database) -> set[int]:
    """Images of duplicate groups that have any keep/drop decision."""
    return {r[0] for r in db.execute("SELECT DISTINCT image_id FROM duplicate_decisions")}


def dropped_images(db: Database) -> set[int]:
    """Images the admin chose to drop from their duplicate group."""
    return {
        r[0]
        for r in db.execute(
            "SELECT d.image_id FROM duplicate_decisions d WHERE d.id = (SELECT max(id)"
            " FROM duplicate_decisions e WHERE e.image_id = d.image_id) AND d.keep = 0"
        )
    }
