"""Many labels per keystroke: the grids people label at once (a page of a cluster, a page of
one class's predictions) and the votes such a grid writes, all in one transaction, undoable
as one. The clusterings themselves are in `clusterings`.

What a grid shows a person: images that still need votes, that this person has not
answered, and that others' leases leave room for (as the labeling queue does); the images
shown are leased to the person like a labeling card. Images toggled as odd ones out (or as
wrong predictions) get no vote: their lease is given back and they go to the front of the
queue, where the next annotator labels them one by one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlite_utils import Database

from . import labels
from .clusterings import current_clustering, get_clustering
from .connection import StoreError, is_row_id, now_iso, write
from .consensus import get_rules, labelers, votes_needed_sql
from .queue import ANSWERED_BY_ME

KINDS = ("cluster", "mixed", "grid")
SOURCES = {"cluster": "cluster", "grid": "grid"}  # the annotations' source per kind
ORDERS = ("confident", "uncertain")


def _one(db: Database, sql: str, params=()) -> dict | None:
    rows = list(db.query(sql, params))
    return rows[0] if rows else None


class StaleGrid(StoreError):
    """The grid was drawn from a clustering or round that has been replaced since."""


@dataclass
class BulkResult:
    action_id: int
    labeled: int  # votes written
    set_aside: int  # toggled images, back to the queue
    passed: int  # already answered by this person, or completed by others meanwhile


# --- what a grid may show ----------------------------------------------------------------


def _open_sql(db: Database, image: str) -> str:
    """SQL true when image `image` (with images aliased i, image_state s) may be shown to
    :user now: it needs votes, :user has not answered it, and others' leases leave room."""
    needed = votes_needed_sql(get_rules(db).votes_per_image, labelers(db))
    return (
        f"EXISTS (SELECT 1 FROM queue q WHERE q.image_id = {image})"
        f" AND NOT {ANSWERED_BY_ME.format(image=image)}"
        " AND s.votes + s.unsure + (SELECT count(*) FROM leases l"
        f"   WHERE l.image_id = {image} AND l.user_id != :user AND l.expires_at > :now)"
        f" < {needed}"
    )


def _lease(db: Database, user_id: int, image_ids: list[int], lease_seconds: int) -> None:
    """Hold the grid's images for this user, and give back whatever else they held (the
    previous grid, a labeling card): a person works on one grid at a time."""
    now = time.time()
    db.execute("CREATE TEMP TABLE IF NOT EXISTS grid_ids (image_id INTEGER PRIMARY KEY)")
    db.execute("DELETE FROM temp.grid_ids")
    db.conn.executemany("INSERT OR IGNORE INTO temp.grid_ids (image_id) VALUES (?)",
                        [(i,) for i in image_ids])
    db.execute("DELETE FROM leases WHERE user_id = ? AND image_id NOT IN"
               " (SELECT image_id FROM temp.grid_ids)", [user_id])
    db.conn.executemany(
        "INSERT INTO leases (image_id, user_id, handed_at, expires_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (image_id, user_id) DO UPDATE SET expires_at = excluded.expires_at",
        [(image_id, user_id, now + offset * 1e-6, now + lease_seconds)
         for offset, image_id in enumerate(image_ids)],
    )


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
        f" AND {_open_sql(db, 'm.image_id')} GROUP BY m.cluster ORDER BY pages, m.cluster"
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
        f" AND m.position > {_resume_sql()} AND {_open_sql(db, 'm.image_id')}"
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
            f" AND m.position > {_resume_sql()} AND {_open_sql(db, 'm.image_id')}"
            " ORDER BY m.position LIMIT :limit", params))
        left = db.execute(
            "SELECT count(*) FROM cluster_members m JOIN images i ON i.id = m.image_id"
            " JOIN image_state s ON s.image_id = m.image_id"
            " WHERE m.clustering_id = :clustering AND m.cluster = :cluster"
            f" AND m.position > {_resume_sql()} AND {_open_sql(db, 'm.image_id')}",
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


def latest_round_id(db: Database) -> int | None:
    return db.execute("SELECT max(id) FROM rounds WHERE status = 'done'").fetchone()[0]


def _set_aside_sql() -> str:
    """True when :user toggled image p.image_id as wrong on a grid of its predicted class
    p.class_id, in this round or an earlier one: they said it is not that class, so a new
    round that predicts it again (it has learned nothing about it) does not show it again."""
    return (
        "EXISTS (SELECT 1 FROM bulk_items bi JOIN bulk_actions b ON b.id = bi.action_id"
        " WHERE bi.image_id = p.image_id AND bi.annotation_id IS NULL AND b.user_id = :user"
        " AND b.kind = 'grid' AND b.class_id = p.class_id AND b.undone_at IS NULL)"
    )


def verify_counts(db: Database, user_id: int, page: int = 48) -> dict[int, dict]:
    """class id -> {count: images the latest finished round predicts as that class that
    this user may verify now, confidence: the mean confidence of the first page of them}."""
    round_id = latest_round_id(db)
    if round_id is None:
        return {}
    params = {"round": round_id, "user": user_id, "now": time.time(), "page": page}
    rows = db.execute(
        "SELECT class_id, count(*), avg(CASE WHEN rank <= :page THEN confidence END) FROM"
        " (SELECT p.class_id, p.confidence, row_number() OVER (PARTITION BY p.class_id"
        "   ORDER BY p.confidence DESC) AS rank FROM predictions p"
        "   JOIN images i ON i.id = p.image_id JOIN image_state s ON s.image_id = p.image_id"
        f"   WHERE p.round_id = :round AND NOT {_set_aside_sql()}"
        f"   AND {_open_sql(db, 'p.image_id')}) GROUP BY class_id", params).fetchall()
    return {class_id: {"count": count, "confidence": confidence}
            for class_id, count, confidence in rows}


def surest_class(counts: dict[int, dict]) -> int | None:
    """The class whose first page the model is surest of: verifying it costs the fewest
    toggles (ties: the lower class id)."""
    if not counts:
        return None
    return max(counts, key=lambda c: (counts[c]["confidence"], -c))


def verify_page(db: Database, user_id: int, class_id: int, order: str = "confident",
                limit: int = 48, lease_seconds: int = 300,
                ahead: list[int] | None = None) -> tuple[int | None, list[dict]]:
    """(round id, [{image_id, confidence}]): a page of the images the latest finished round
    predicts as `class_id`, most confident first (or most uncertain first), leased to this
    user. (None, []) before any round. `ahead`, if given, receives the ids of up to `limit`
    images that would come next (not leased), for the page to prefetch."""
    if order not in ORDERS:
        raise StoreError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
    round_id = latest_round_id(db)
    if round_id is None:
        return None, []
    direction = "DESC" if order == "confident" else "ASC"
    params = {"round": round_id, "user": user_id, "now": time.time(), "cls": class_id,
              "limit": limit * (2 if ahead is not None else 1)}
    with write(db):
        rows = list(db.query(
            "SELECT p.image_id, p.confidence FROM predictions p"
            " JOIN images i ON i.id = p.image_id JOIN image_state s ON s.image_id = p.image_id"
            " WHERE p.round_id = :round AND p.class_id = :cls"
            f" AND NOT {_set_aside_sql()} AND {_open_sql(db, 'p.image_id')}"
            f" ORDER BY p.confidence {direction}, p.image_id LIMIT :limit", params))
        items = rows[:limit]
        _lease(db, user_id, [r["image_id"] for r in items], lease_seconds)
    if ahead is not None:
        ahead.extend(r["image_id"] for r in rows[limit:])
    return round_id, items


# --- writing a grid's votes -----------------------------------------------------------------


def _check_ids(shown: list[int], set_aside: list[int]) -> None:
    if not shown:
        raise StoreError("the grid named no images")
    if len(set(shown)) != len(shown):
        raise StoreError("an image appears twice in the grid")
    strays = set(set_aside) - set(shown)
    if strays:
        raise StoreError(f"image {min(strays)} was toggled but is not in the grid")


def _check_class(db: Database, class_id: int) -> None:
    if not is_row_id(class_id) or db.execute(
            "SELECT 1 FROM classes WHERE id = ?", [class_id]).fetchone() is None:
        raise StoreError(f"no class with id {class_id}")


def _record(db: Database, user_id: int, kind: str, class_id: int | None, shown: list[int],
            set_aside: list[int], seconds: float | None, **fields) -> BulkResult:
    """Inside a write transaction: the action's row, a vote per image shown and not set
    aside (skipping those this user answered and those that need no more votes), and the
    set-aside images given back to the queue's front."""
    now = now_iso()
    columns = {"user_id": user_id, "kind": kind, "class_id": class_id, "created_at": now,
               **fields}
    cursor = db.execute(
        f"INSERT INTO bulk_actions ({', '.join(columns)}) VALUES"
        f" ({', '.join('?' * len(columns))})", list(columns.values()))
    action_id = cursor.lastrowid
    aside = set(set_aside)
    voting = [i for i in shown if i not in aside]
    each = round(seconds / len(voting), 3) if seconds is not None and voting else None
    labeled = passed = 0
    for image_id in voting:
        if db.execute("SELECT 1 FROM queue WHERE image_id = ?", [image_id]).fetchone() is None:
            if db.execute("SELECT 1 FROM images WHERE id = ?", [image_id]).fetchone() is None:
                raise StoreError(f"no image with id {image_id}")
            passed += 1  # completed by others meanwhile: one more vote is not wanted
            continue
        try:
            annotation_id = labels.add_vote(db, user_id, image_id, "label", class_id,
                                            seconds=each, source=SOURCES[kind])
        except labels.AlreadyAnswered:
            passed += 1
            continue
        db.execute("INSERT INTO bulk_items (action_id, image_id, annotation_id) VALUES (?, ?, ?)",
                   [action_id, image_id, annotation_id])
        labeled += 1
    front = db.execute("SELECT coalesce(min(priority), 0) FROM queue").fetchone()[0]
    for offset, image_id in enumerate(set_aside):
        db.execute("INSERT INTO bulk_items (action_id, image_id) VALUES (?, ?)",
                   [action_id, image_id])
        db.execute("DELETE FROM leases WHERE image_id = ? AND user_id = ?", [image_id, user_id])
        # Ahead of everything else, in the grid's order.
        db.execute("UPDATE queue SET priority = ? WHERE image_id = ?",
                   [front - len(set_aside) + offset, image_id])
    db.execute("UPDATE bulk_actions SET labeled = ?, set_aside = ?, passed = ?, seconds = ?"
               " WHERE id = ?", [labeled, len(set_aside), passed, seconds, action_id])
    return BulkResult(action_id, labeled, len(set_aside), passed)


def _current_cluster(db: Database, clustering_id: int, cluster: int) -> None:
    current = current_clustering(db)
    if current is None or current["id"] != clustering_id:
        if get_clustering(db, clustering_id) is None:
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


def accept_grid(db: Database, user_id: int, round_id: int, class_id: int, shown: list[int],
                set_aside: list[int] = (), seconds: float | None = None) -> BulkResult:
    """One vote for `class_id` from this user on every image of the verify grid `shown`
    but those toggled wrong (`set_aside`), source 'grid', in one transaction."""
    shown, set_aside = list(shown), list(set_aside)
    _check_ids(shown, set_aside)
    with write(db):
        latest = latest_round_id(db)
        if latest != round_id:
            if not is_row_id(round_id) or db.execute(
                    "SELECT 1 FROM rounds WHERE id = ?", [round_id]).fetchone() is None:
                raise StoreError(f"no round {round_id}")
            raise StaleGrid(f"round {round_id}'s predictions have been replaced by round"
                            f" {latest}'s")
        _check_class(db, class_id)
        marks = ",".join("?" * len(shown))
        predicted = dict(db.execute(
            f"SELECT image_id, class_id FROM predictions WHERE round_id = ?"
            f" AND image_id IN ({marks})", [round_id, *shown]).fetchall())
        for image_id in shown:
            if predicted.get(image_id) != class_id:
                raise StoreError(f"round {round_id} does not predict image {image_id} as this"
                                 " class")
        return _record(db, user_id, "grid", class_id, shown, set_aside, seconds,
                       round_id=round_id)


def undo_last(db: Database, user_id: int, kinds: tuple[str, ...],
              lease_seconds: int = 300) -> dict | None:
    """Take back this user's latest grid of one of `kinds` that is not undone yet: its votes
    are retracted (appended retractions, as for any undo) and a cluster resumes before it.
    Returns the action, or None when there is nothing to undo."""
    marks = ",".join("?" * len(kinds))
    with write(db):
        action = _one(db, f"SELECT * FROM bulk_actions WHERE user_id = ? AND kind IN ({marks})"
                          " AND undone_at IS NULL ORDER BY id DESC LIMIT 1", [user_id, *kinds])
        if action is None:
            return None
        for (annotation_id,) in db.execute(
                "SELECT annotation_id FROM bulk_items WHERE action_id = ?"
                " AND annotation_id IS NOT NULL", [action["id"]]).fetchall():
            labels.retract(db, user_id, annotation_id, lease_seconds)
        db.execute("UPDATE bulk_actions SET undone_at = ? WHERE id = ?",
                   [now_iso(), action["id"]])
    return action


def last_action(db: Database, user_id: int, kinds: tuple[str, ...]) -> dict | None:
    """The latest grid of `kinds` this user could undo."""
    marks = ",".join("?" * len(kinds))
    return _one(db, f"SELECT * FROM bulk_actions WHERE user_id = ? AND kind IN ({marks})"
                    " AND undone_at IS NULL ORDER BY id DESC LIMIT 1", [user_id, *kinds])
