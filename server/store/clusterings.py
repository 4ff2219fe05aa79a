"""Clusterings for the cluster bootstrap: the job's row (queued, running, done or failed, with
its progress, like a round's) and, once done, every image's cluster and position in it."""

from __future__ import annotations

import json

import numpy as np
from sqlite_utils import Database

from . import job_rows
from .connection import StoreError, is_row_id, now_iso, write


def queue_clustering(db: Database, k: int | None, requested_by: int | None) -> tuple[int, bool]:
    """(clustering id, whether it is new): one already queued or running is returned
    instead of a second."""
    if k is not None and not 1 <= k <= 100_000:
        raise StoreError(f"the number of clusters must be between 1 and 100,000, not {k}")
    with write(db):
        active = active_clustering(db)
        if active:
            return active["id"], False
        cursor = db.execute(
            "INSERT INTO clusterings (status, k, requested_by, created_at, progress, message)"
            " VALUES ('queued', ?, ?, ?, 0, 'waiting for the worker')",
            [k, requested_by, now_iso()],
        )
    return cursor.lastrowid, True


def _one(db: Database, sql: str, params=()) -> dict | None:
    rows = list(db.query(sql, params))
    return rows[0] if rows else None


def active_clustering(db: Database) -> dict | None:
    return _one(db, "SELECT * FROM clusterings WHERE status IN ('queued', 'running')"
                    " ORDER BY id LIMIT 1")


def get_clustering(db: Database, clustering_id: int) -> dict | None:
    if not is_row_id(clustering_id):
        return None
    return _one(db, "SELECT * FROM clusterings WHERE id = ?", [clustering_id])


def latest_clustering(db: Database) -> dict | None:
    return _one(db, "SELECT * FROM clusterings ORDER BY id DESC LIMIT 1")


def current_clustering(db: Database) -> dict | None:
    """The clustering the bootstrap pages show: the latest that finished."""
    return _one(db, "SELECT * FROM clusterings WHERE status = 'done' ORDER BY id DESC LIMIT 1")


def start_clustering(db: Database, clustering_id: int) -> None:
    job_rows.start(db, "clusterings", clustering_id, "clustering")


def report_clustering(db: Database, clustering_id: int, progress: float, message: str) -> None:
    job_rows.report(db, "clusterings", clustering_id, progress, message)


def clustering_heartbeat(db: Database, clustering_id: int) -> None:
    job_rows.heartbeat(db, "clusterings", clustering_id)


def fail_clustering(db: Database, clustering_id: int, error: str) -> None:
    """Mark a clustering failed; the previous one (if any) keeps serving."""
    job_rows.fail(db, "clusterings", clustering_id, error)


def fail_stale_clusterings(db: Database, stale_seconds: float) -> list[int]:
    """Clusterings marked running whose worker stopped reporting (killed, crashed)."""
    return job_rows.fail_stale(db, "clusterings", stale_seconds,
                               "the worker stopped while clustering (killed or crashed)")


def publish_clustering(db: Database, clustering_id: int, image_ids: np.ndarray,
                       clusters: np.ndarray, positions: np.ndarray, distances: np.ndarray,
                       summary: dict) -> None:
    """Store every image's cluster and position and mark the clustering done, in one
    transaction: the bootstrap pages switch to it whole."""
    rows = zip((int(clustering_id) for _ in range(len(image_ids))), clusters.tolist(),
               image_ids.tolist(), positions.tolist(), distances.tolist())
    with write(db):
        row = get_clustering(db, clustering_id)
        if row is None or row["status"] != "running":
            raise StoreError(f"clustering {clustering_id} is not running; its result is dropped")
        db.conn.executemany(
            "INSERT INTO cluster_members (clustering_id, cluster, image_id, position, distance)"
            " VALUES (?, ?, ?, ?, ?)", rows,
        )
        db.execute(
            "UPDATE clusterings SET status = 'done', finished_at = ?, progress = 1,"
            " message = ?, clusters = ?, suggested_k = ?, silhouettes = ?, method = ?,"
            " pool_size = ?, seconds = ? WHERE id = ?",
            [now_iso(), summary.get("message", "done"), summary["clusters"],
             summary.get("suggested_k"), json.dumps(summary.get("silhouettes", {})),
             summary["method"], len(image_ids), summary.get("seconds"), clustering_id],
        )
