"""The reviewer's side of consensus: gold answers, the queue of disputed images, and reading
the votes for review and for the agreement measures. A reviewer's adjudication and a review
request are answers like votes: `labels.adjudicate` and `labels.request_review`."""

from __future__ import annotations

from sqlite_utils import Database

from .connection import now_iso, write
from .consensus import FINAL_SQL
from .labels import EFFECTIVE, require_class, require_image


def set_gold(db: Database, user_id: int, image_id: int, class_id: int | None) -> None:
    """Mark an image as gold with its known answer (None takes it out of the gold set)."""
    with write(db):
        require_image(db, image_id)
        if class_id is not None:
            require_class(db, class_id)
        db.execute(
            "INSERT INTO gold (image_id, class_id, user_id, created_at) VALUES (?, ?, ?, ?)",
            [image_id, class_id, user_id, now_iso()],
        )


def gold_answers(db: Database) -> dict[int, int]:
    """image id -> known class id, for every image currently in the gold set."""
    rows = db.execute(
        "SELECT g.image_id, g.class_id FROM gold g WHERE g.id = (SELECT max(id) FROM gold h"
        " WHERE h.image_id = g.image_id)"
    )
    return {image_id: class_id for image_id, class_id in rows if class_id is not None}


def review_queue(db: Database, limit: int = 1, after: int = 0) -> list[int]:
    """Disputed images waiting for a reviewer, oldest dispute first: ordered by the last
    answer on each (annotation ids only grow, where two timestamps may share a millisecond)."""
    return [
        r[0]
        for r in db.execute(
            "SELECT s.image_id FROM image_state s WHERE s.status = 'disputed' AND s.image_id > ?"
            " ORDER BY (SELECT max(a.id) FROM annotations a WHERE a.image_id = s.image_id),"
            " s.updated_at, s.image_id LIMIT ?",
            [after, limit],
        )
    ]


def review_count(db: Database) -> int:
    return db.execute("SELECT count(*) FROM image_state WHERE status = 'disputed'").fetchone()[0]


# --- reading votes for review and quality -------------------------------------------------


def all_votes(db: Database) -> list[tuple[int, int | None, int]]:
    """Every effective label vote as (image id, user id or None for import, class id): the
    input of agreement measures and of the annotator model. Unsure votes and skips are not
    labels and are left out."""
    return [
        (r[0], r[1], r[2])
        for r in db.execute(
            "SELECT a.image_id, a.user_id, a.class_id FROM annotations a"
            f" WHERE a.kind = 'label' AND {EFFECTIVE} ORDER BY a.id"
        )
    ]


def consensus_labels(db: Database) -> dict[int, int]:
    """image id -> consensus class id, for images agreed or adjudicated."""
    return {
        r[0]: r[1]
        for r in db.execute(
            f"SELECT image_id, class_id FROM image_state WHERE status IN {FINAL_SQL}"
        )
    }


def image_votes(db: Database, image_id: int) -> list[dict]:
    """Everything said about one image, in order: votes (label, unsure, skip), undone ones
    marked, adjudications and review requests, with who said it."""
    return list(
        db.query(
            "SELECT a.id, a.kind, a.class_id, c.name AS class_name, a.user_id,"
            " coalesce(u.name, '(import)') AS user_name, a.source, a.created_at, a.seconds,"
            " EXISTS (SELECT 1 FROM annotations r WHERE r.retracts_id = a.id) AS undone"
            " FROM annotations a LEFT JOIN users u ON u.id = a.user_id"
            " LEFT JOIN classes c ON c.id = a.class_id"
            " WHERE a.image_id = ? AND a.kind != 'retract' ORDER BY a.id",
            [image_id],
        )
    )


def annotator_seconds(db: Database) -> dict[int, list[float]]:
    """user id -> seconds spent on each effective answer (labels and unsure)."""
    seconds: dict[int, list[float]] = {}
    for user_id, value in db.execute(
        "SELECT a.user_id, a.seconds FROM annotations a WHERE a.user_id IS NOT NULL"
        f" AND a.seconds IS NOT NULL AND a.kind IN ('label', 'unsure') AND {EFFECTIVE}"
    ):
        seconds.setdefault(user_id, []).append(value)
    return seconds
