"""Grid verify: a page of the images the latest finished round predicts as one class,
accepted at once. How many images each class offers a person, the class whose page the
model is surest of, a page in either order (most confident or most uncertain first), and
accepting a page as that class. What every grid shares (which images a grid may show,
leasing them, writing its votes, undo) is in `bulk`.
"""

from __future__ import annotations

import time

from sqlite_utils import Database

from . import auto_labels, labels
from .bulk import (
    BulkResult,
    StaleGrid,
    _check_class,
    _check_ids,
    _finish_action,
    _lease,
    _record,
    _start_action,
    set_aside_to_front,
)
from .connection import StoreError, is_row_id, write
from .labels import EFFECTIVE
from .queue import grid_open_sql

# "model": the images the model labeled itself (auto-labels) as the class, least confident
# first, for a person to confirm (their vote supersedes the model's) or toggle (withdrawn).
ORDERS = ("confident", "uncertain", "model")


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
        f"   AND {grid_open_sql(db, 'p.image_id')}) GROUP BY class_id", params).fetchall()
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
            f" AND NOT {_set_aside_sql()} AND {grid_open_sql(db, 'p.image_id')}"
            f" ORDER BY p.confidence {direction}, p.image_id LIMIT :limit", params))
        items = rows[:limit]
        _lease(db, user_id, [r["image_id"] for r in items], lease_seconds)
    if ahead is not None:
        ahead.extend(r["image_id"] for r in rows[limit:])
    return round_id, items


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


# --- the model's own labels ------------------------------------------------------------------

# An image labeled by the model alone (status 'auto') that is not waiting in the queue for its
# blind spot check and that no one else holds now; `a` is its effective auto-label.
_AUTO_OPEN = (
    "s.status = 'auto' AND a.image_id = s.image_id AND a.kind = 'auto' AND " + EFFECTIVE
    + " AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.image_id = s.image_id)"
    " AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.image_id = s.image_id"
    "   AND l.user_id != :user AND l.expires_at > :now)"
)


def auto_counts(db: Database, user_id: int) -> dict[int, dict]:
    """class id -> {count, confidence}: the model's labels of that class this user may
    review now, and their mean confidence."""
    rows = db.execute(
        "SELECT s.class_id, count(*), avg(x.confidence) FROM image_state s, annotations a"
        f" JOIN auto_answers x ON x.annotation_id = a.id WHERE {_AUTO_OPEN}"
        " GROUP BY s.class_id", {"user": user_id, "now": time.time()}).fetchall()
    return {class_id: {"count": count, "confidence": confidence}
            for class_id, count, confidence in rows}


def auto_page(db: Database, user_id: int, class_id: int, limit: int = 48,
              lease_seconds: int = 300) -> list[dict]:
    """[{image_id, confidence}]: a page of the model's labels of `class_id`, least confident
    first, leased to this user."""
    params = {"user": user_id, "now": time.time(), "cls": class_id, "limit": limit}
    with write(db):
        items = list(db.query(
            "SELECT s.image_id, x.confidence FROM image_state s, annotations a"
            f" JOIN auto_answers x ON x.annotation_id = a.id WHERE s.class_id = :cls"
            f" AND {_AUTO_OPEN} ORDER BY x.confidence, s.image_id LIMIT :limit", params))
        _lease(db, user_id, [r["image_id"] for r in items], lease_seconds)
    return items


def review_auto_labels(db: Database, user_id: int, class_id: int, shown: list[int],
                       wrong: list[int] = (), seconds: float | None = None) -> BulkResult:
    """A person's verdict on a page of the model's labels of `class_id`, in one transaction:
    a vote for the class on every image shown but those toggled (`wrong`; source 'grid',
    superseding the model's label), and the toggled ones' auto-labels withdrawn (appended
    retractions), the images to the front of the queue. Undo takes the votes back (the
    model's labels stand again); a withdrawn label stays withdrawn."""
    shown, wrong = list(shown), list(wrong)
    _check_ids(shown, wrong)
    with write(db):
        _check_class(db, class_id)
        for image_id in shown:
            held = db.execute(
                "SELECT 1 FROM image_state s JOIN leases l ON l.image_id = s.image_id"
                " WHERE s.image_id = ? AND s.status = 'auto' AND s.class_id = ?"
                " AND l.user_id = ?", [image_id, class_id, user_id]).fetchone()
            if held is None:
                raise StoreError(f"image {image_id} is not a label of this class by the model"
                                 " that this page holds (answered or withdrawn meanwhile?)")
        action_id = _start_action(db, user_id, "grid", class_id)
        voting = [i for i in shown if i not in set(wrong)]
        each = round(seconds / len(voting), 3) if seconds is not None and voting else None
        for image_id in voting:
            annotation_id = labels.add_vote(db, user_id, image_id, "label", class_id,
                                            seconds=each, source="grid")
            db.execute("INSERT INTO bulk_items (action_id, image_id, annotation_id)"
                       " VALUES (?, ?, ?)", [action_id, image_id, annotation_id])
        if wrong:  # back in the queue once withdrawn, then to its front
            auto_labels.withdraw(db, image_ids=wrong, user_id=user_id, source="grid")
            set_aside_to_front(db, action_id, user_id, wrong)
        return _finish_action(db, action_id, len(voting), len(wrong), 0, seconds)
