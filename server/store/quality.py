"""Quality runs' findings and the admin's keep/drop decisions on near-duplicate groups. A run's
job row lives as every job's does (job_rows.py)."""

from __future__ import annotations

import json

from sqlite_utils import Database

from . import job_rows
from .connection import StoreError, is_row_id, now_iso, write


def publish_findings(db: Database, run_id: int, result: dict, message: str = "done") -> None:
    """Store a quality run's findings and mark it done, unless it stopped running meanwhile
    (failed as stale): then its findings are dropped, as a round's ranking would be."""
    with write(db):
        if not job_rows.is_running(db, "quality_runs", run_id):
            raise StoreError(f"quality run {run_id} is not running; its findings are dropped")
        db.execute(
            "UPDATE quality_runs SET status = 'done', finished_at = ?, progress = 1,"
            " message = ?, result = ? WHERE id = ?",
            [now_iso(), message, json.dumps(result), run_id],
        )


def latest_findings(db: Database) -> dict | None:
    """The latest finished quality run, its findings (`result`) decoded."""
    row = job_rows.latest(db, "quality_runs", status="done")
    if row is not None:
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
