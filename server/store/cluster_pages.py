"""The cluster bootstrap's grids: a page of a cluster of look-alikes, labeled at once.
Which cluster a person gets next, a cluster's next page for them, the overview of every
cluster's state, confirming a page as one class, and marking a cluster mixed. The
clusterings themselves are in `clusterings`; what every grid shares (which images a grid
may show, leasing them, writing its votes, undo) is in `bulk`.
"""

from __future__ import annotations

import time

from sqlite_utils import Database

from . import job_rows
from .bulk import BulkResult, StaleGrid, _check_class, _check_ids, _lease, _one, _record
from .clusterings import current_clustering
from .connection import StoreError, now_iso, write
from .queue import grid_open_sql


def _resume_sql() -> str:
    """The user's last page of cluster m.cluster (-1 for none), from actions not undone."""
    return (
        "coalesce((SELECT max(b.last_position) FROM bulk_actions b WHERE b.user_id = :user"
        " AND b.clustering_id = m.clustering_id AND b.cluster = m.cluster"
        " AND b.kind = 'cluster' AND b.undone_at IS NULL), -1)"
    )


MIXED_SQL = (
    "EXISTS (SELECT 1 FROM bulk_actions b WHERE b.user_id = :user"
    " AND b.clustering_id = m.clustering_id AND b.cluster = m.cluster AND b.kind = 'mixed'"
    " AND b.undone_at IS NULL)"
)


def next_cluster(db: Database, clustering_id: int, user_id: int) -> int | None:
    """The cluster to show this user next: of those with images left for them past where
    they left off and not marked mixed by them, the one they labeled fewest pages of, then
    the tightest. So the first page of every cluster comes before any second page: a budget
    spent on the bootstrap covers every group of look-alikes, not a few groups in depth."""
    row = db.execute(
        "SELECT m.cluster, (SELECT count(*) FROM bulk_actions b WHERE b.user_id = :user"
        "   AND b.clustering_id = m.clustering_id AND b.cluster = m.cluster"
        "   AND b.kind = 'cluster' AND b.undone_at IS NULL) AS pages"
        " FROM cluster_members m JOIN images i ON i.id = m.image_id"
        " JOIN image_state s ON s.image_id = m.image_id WHERE m.clustering_id = :clustering"
        f" AND m.position > {_resume_sql()} AND NOT {MIXED_SQL}"
        f" AND {grid_open_sql(db, 'm.image_id')} GROUP BY m.cluster ORDER BY pages, m.cluster"
        " LIMIT 1",
        {"clustering": clustering_id, "user": user_id, "now": time.time()},
    ).fetchone()
    return row[0] if row else None


def cluster_overview(db: Database, clustering_id: int, user_id: int) -> list[dict]:
    """Every cluster with its size, the images left for this user, and its state for them:
    open, mixed (they left it alone) or done."""
    params = {"clustering": clustering_id, "user": user_id, "now": time.time()}
    sizes = dict(db.execute(
        "SELECT cluster, count(*) FROM cluster_members WHERE clustering_id = :clustering"
        " GROUP BY cluster", params).fetchall())
    left = dict(db.execute(
        "SELECT m.cluster, count(*) FROM cluster_members m JOIN images i ON i.id = m.image_id"
        " JOIN image_state s ON s.image_id = m.image_id WHERE m.clustering_id = :clustering"
        f" AND m.position > {_resume_sql()} AND {grid_open_sql(db, 'm.image_id')}"
        " GROUP BY m.cluster", params).fetchall())
    mixed = {r[0] for r in db.execute(
        "SELECT DISTINCT cluster FROM bulk_actions WHERE user_id = :user"
        " AND clustering_id = :clustering AND kind = 'mixed' AND undone_at IS NULL", params)}
    return [
        {"cluster": c, "size": sizes[c], "left": left.get(c, 0),
         "state": "mixed" if c in mixed else ("open" if left.get(c) else "done")}
        for c in sorted(sizes)
    ]


def cluster_page(db: Database, clustering_id: int, cluster: int, user_id: int,
                 limit: int = 48, lease_seconds: int = 300) -> dict:
    """The next page of a cluster for this user, leased to them: {members: [{image_id,
    position}], size, left (open images past where they left it, this page included),
    mixed (they marked it so), class_id (the class they gave its earlier pages)}."""
    params = {"clustering": clustering_id, "cluster": cluster, "user": user_id,
              "now": time.time(), "limit": limit}
    with write(db):
        members = list(db.query(
            "SELECT m.image_id, m.position FROM cluster_members m"
            " JOIN images i ON i.id = m.image_id JOIN image_state s ON s.image_id = m.image_id"
            " WHERE m.clustering_id = :clustering AND m.cluster = :cluster"
            f" AND m.position > {_resume_sql()} AND {grid_open_sql(db, 'm.image_id')}"
            " ORDER BY m.position LIMIT :limit", params))
        left = db.execute(
            "SELECT count(*) FROM cluster_members m JOIN images i ON i.id = m.image_id"
            " JOIN image_state s ON s.image_id = m.image_id"
            " WHERE m.clustering_id = :clustering AND m.cluster = :cluster"
            f" AND m.position > {_resume_sql()} AND {grid_open_sql(db, 'm.image_id')}",
            params).fetchone()[0]
        _lease(db, user_id, [m["image_id"] for m in members], lease_seconds)
    size = db.execute("SELECT count(*) FROM cluster_members WHERE clustering_id = ?"
                      " AND cluster = ?", [clustering_id, cluster]).fetchone()[0]
    last = _one(db, "SELECT class_id FROM bulk_actions WHERE user_id = ? AND clustering_id = ?"
                    " AND cluster = ? AND kind = 'cluster' AND undone_at IS NULL"
                    " ORDER BY id DESC LIMIT 1", [user_id, clustering_id, cluster])
    mixed = db.execute(
        "SELECT 1 FROM bulk_actions WHERE user_id = ? AND clustering_id = ? AND cluster = ?"
        " AND kind = 'mixed' AND undone_at IS NULL", [user_id, clustering_id, cluster]
    ).fetchone() is not None
    return {"members": members, "size": size, "left": left, "mixed": mixed,
            "class_id": last["class_id"] if last else None}


def _current_cluster(db: Database, clustering_id: int, cluster: int) -> None:
    current = current_clustering(db)
    if current is None or current["id"] != clustering_id:
        if job_rows.get(db, "clusterings", clustering_id) is None:
            raise StoreError(f"no clustering {clustering_id}")
        raise StaleGrid(
            f"clustering {clustering_id} has been replaced by clustering {current['id']}"
            if current else f"clustering {clustering_id} is not finished")
    if db.execute("SELECT 1 FROM cluster_members WHERE clustering_id = ? AND cluster = ?"
                  " LIMIT 1", [clustering_id, cluster]).fetchone() is None:
        raise StoreError(f"clustering {clustering_id} has no cluster {cluster}")


def confirm_cluster(db: Database, user_id: int, clustering_id: int, cluster: int,
                    class_id: int, shown: list[int], set_aside: list[int] = (),
                    seconds: float | None = None) -> BulkResult:
    """One vote for `class_id` from this user on every image of the cluster page `shown`
    but those `set_aside` (the odd ones out), source 'cluster', in one transaction."""
    shown, set_aside = list(shown), list(set_aside)
    _check_ids(shown, set_aside)
    with write(db):
        _current_cluster(db, clustering_id, cluster)
        _check_class(db, class_id)
        marks = ",".join("?" * len(shown))
        positions = dict(db.execute(
            f"SELECT image_id, position FROM cluster_members WHERE clustering_id = ?"
            f" AND cluster = ? AND image_id IN ({marks})", [clustering_id, cluster, *shown]
        ).fetchall())
        strangers = [i for i in shown if i not in positions]
        if strangers:
            raise StoreError(f"image {strangers[0]} is not in cluster {cluster}")
        return _record(db, user_id, "cluster", class_id, shown, set_aside, seconds,
                       clustering_id=clustering_id, cluster=cluster,
                       last_position=max(positions.values()))


def mark_mixed(db: Database, user_id: int, clustering_id: int, cluster: int) -> int:
    """This user leaves the cluster alone (its images stay in the queue). Returns the
    action's id."""
    with write(db):
        _current_cluster(db, clustering_id, cluster)
        cursor = db.execute(
            "INSERT INTO bulk_actions (user_id, kind, clustering_id, cluster, labeled,"
            " set_aside, passed, created_at) VALUES (?, 'mixed', ?, ?, 0, 0, 0, ?)",
            [user_id, clustering_id, cluster, now_iso()])
        db.execute("DELETE FROM leases WHERE user_id = ? AND image_id IN (SELECT image_id"
                   " FROM cluster_members WHERE clustering_id = ? AND cluster = ?)",
                   [user_id, clustering_id, cluster])
    return cursor.lastrowid
