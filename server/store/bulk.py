"""What every grid shares: the grids people label at once are a page of a cluster (the
cluster bootstrap, in `cluster_pages`) or a page of one class's predictions (grid verify, in
`verify_pages`); this module holds what both need: which images a grid may show and leasing
them, the one-transaction writer of a grid's votes, and undoing a grid as one.

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
from .connection import StoreError, is_row_id, now_iso, write
from .queue import require_handed

KINDS = ("cluster", "mixed", "grid")
SOURCES = {"cluster": "cluster", "grid": "grid"}  # the annotations' source per kind


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
    action_id = _start_action(db, user_id, kind, class_id, **fields)
    aside = set(set_aside)
    voting = [i for i in shown if i not in aside]
    each = round(seconds / len(voting), 3) if seconds is not None and voting else None
    labeled = passed = 0
    for image_id in shown:
        if db.execute("SELECT 1 FROM images WHERE id = ?", [image_id]).fetchone() is None:
            raise StoreError(f"no image with id {image_id}")
        in_queue = db.execute("SELECT 1 FROM queue WHERE image_id = ?", [image_id]).fetchone()
        if in_queue is not None and labels.answer_of(db, user_id, image_id) is None:
            # One image the grid was never handed refuses the whole grid (the caller's
            # transaction rolls back): a forged grid writes nothing.
            require_handed(db, user_id, image_id)
    for image_id in voting:
        if db.execute("SELECT 1 FROM queue WHERE image_id = ?", [image_id]).fetchone() is None:
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
    set_aside_to_front(db, action_id, user_id, set_aside)
    return _finish_action(db, action_id, labeled, len(set_aside), passed, seconds)


def _start_action(db: Database, user_id: int, kind: str, class_id: int | None,
                  **fields) -> int:
    """Inside a write transaction: a grid's action row (its counts come at the end)."""
    columns = {"user_id": user_id, "kind": kind, "class_id": class_id, "created_at": now_iso(),
               **fields}
    return db.execute(
        f"INSERT INTO bulk_actions ({', '.join(columns)}) VALUES"
        f" ({', '.join('?' * len(columns))})", list(columns.values())).lastrowid


def set_aside_to_front(db: Database, action_id: int, user_id: int,
                       set_aside: list[int]) -> None:
    """Inside a write transaction: images a grid toggled, recorded with no vote, given back
    by this user and put ahead of everything else in the queue, in the grid's order."""
    front = db.execute("SELECT coalesce(min(priority), 0) FROM queue").fetchone()[0]
    for offset, image_id in enumerate(set_aside):
        db.execute("INSERT INTO bulk_items (action_id, image_id) VALUES (?, ?)",
                   [action_id, image_id])
        db.execute("DELETE FROM leases WHERE image_id = ? AND user_id = ?", [image_id, user_id])
        db.execute("UPDATE queue SET priority = ? WHERE image_id = ?",
                   [front - len(set_aside) + offset, image_id])


def _finish_action(db: Database, action_id: int, labeled: int, set_aside: int, passed: int,
                   seconds: float | None) -> BulkResult:
    db.execute("UPDATE bulk_actions SET labeled = ?, set_aside = ?, passed = ?, seconds = ?"
               " WHERE id = ?", [labeled, set_aside, passed, seconds, action_id])
    return BulkResult(action_id, labeled, set_aside, passed)


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
