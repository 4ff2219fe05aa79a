"""Clusterings for the cluster bootstrap: once a clustering job is done, every image's cluster
and position in it. Its job row lives as every job's does (job_rows.py)."""

from __future__ import annotations

import json

import numpy as np
from sqlite_utils import Database

from . import job_rows
from .connection import StoreError, now_iso, write


def current_clustering(db: Database) -> dict | None:
    """The clustering the bootstrap pages show: the latest that finished."""
    return job_rows.latest(db, "clusterings", status="done")


def publish_clustering(db: Database, clustering_id: int, image_ids: np.ndarray,
                       clusters: np.ndarray, positions: np.ndarray, distances: np.ndarray,
                       summary: dict) -> None:
    """Store every image's cluster and position and mark the clustering done, in one
    transaction: the bootstrap pages switch to it whole."""
    rows = zip((int(clustering_id) for _ in range(len(image_ids))), clusters.tolist(),
               image_ids.tolist(), positions.tolist(), distances.tolist())
    with write(db):
        if not job_rows.is_running(db, "clusterings", clustering_id):
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
