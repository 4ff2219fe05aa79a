"""Answers (append-only annotations: votes, a reviewer's adjudication, a review request), undo
as retraction, and each image's state derived from them."""

from __future__ import annotations

import time

from sqlite_utils import Database

from ..consensus.rules import decide, votes_needed_now
from .connection import StoreError, is_row_id, now_iso, pause_for_writers, write
from .consensus import get_rules, labelers, latest_annotator_model, votes_needed_sql
from .rounds import queue_priority

ANSWER_KINDS = ("label", "skip", "unsure")

# An annotation counts unless a later 'retract' row points at it.
EFFECTIVE = "NOT EXISTS (SELECT 1 FROM annotations r WHERE r.retracts_id = a.id)"
# An auto-label still standing that a spot check sent to people (store/auto_labels.py): its
# image stays in the queue, out of turn, until a person answers it.
SPOT_CHECKED = (
    "SELECT 1 FROM spot_checks c JOIN annotations a ON a.id = c.annotation_id"
    f" WHERE c.image_id = ? AND {EFFECTIVE}"
)
SPOT_CHECK_PRIORITY = -1.0  # before every ranked image (ranks start at 0)


class AlreadyAnswered(StoreError):
    """The user already has an answer on this image (a double click, a stale tab)."""


class NotHanded(StoreError):
    """An answer (or an undo) the page never offered this person: an image not handed to
    them, an answer that is not their latest. Nothing was written."""


def _exists(db: Database, table: str, row_id: int) -> bool:
    return (
        is_row_id(row_id)
        and db.execute(f"SELECT 1 FROM {table} WHERE id = ?", [row_id]).fetchone() is not None
    )


def require_image(db: Database, image_id: int) -> None:
    if not _exists(db, "images", image_id):
        raise StoreError(f"no image with id {image_id}")


def require_class(db: Database, class_id: int) -> None:
    if not _exists(db, "classes", class_id):
        raise StoreError(f"no class with id {class_id}")


def answer_of(db: Database, user_id: int, image_id: int) -> dict | None:
    rows = list(
        db.query(
            "SELECT a.* FROM annotations a WHERE a.image_id = ? AND a.user_id = ?"
            f" AND a.kind IN ('label', 'skip', 'unsure') AND {EFFECTIVE}"
            " ORDER BY a.id DESC LIMIT 1",
            [image_id, user_id],
        )
    )
    return rows[0] if rows else None


def refresh_state(db: Database, image_id: int) -> dict:
    """Recompute an image's consensus from its effective votes, any adjudication and review
    request, and put it in, or take it out of, the annotators' queue. Runs inside the
    caller's write transaction."""
    rows = list(
        db.query(
            "SELECT a.id, a.kind, a.user_id, a.class_id FROM annotations a WHERE a.image_id = ?"
            f" AND a.kind IN ('label', 'unsure', 'adjudicate', 'review', 'auto') AND {EFFECTIVE}"
            " ORDER BY a.id",
            [image_id],
        )
    )
    labels = [(r["user_id"], r["class_id"]) for r in rows if r["kind"] == "label"]
    unsure = sum(1 for r in rows if r["kind"] == "unsure")
    image = db.execute("SELECT votes_needed FROM images WHERE id = ?", [image_id]).fetchone()
    rules = get_rules(db)
    decision = decide(
        labels,
        unsure,
        needed=votes_needed_now(image[0], rules.votes_per_image, labelers(db)),
        rules=rules,
        model=latest_annotator_model(db),
        adjudications=[(r["id"], r["class_id"]) for r in rows if r["kind"] == "adjudicate"],
        review_requests=[r["id"] for r in rows if r["kind"] == "review"],
        auto_label=next((r["class_id"] for r in reversed(rows) if r["kind"] == "auto"), None),
    )
    status, class_id, agreement = decision.status, decision.class_id, decision.agreement
    db.execute(
        "INSERT INTO image_state (image_id, status, class_id, votes, unsure, agreement,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (image_id) DO UPDATE SET"
        " status = excluded.status, class_id = excluded.class_id, votes = excluded.votes,"
        " unsure = excluded.unsure, agreement = excluded.agreement,"
        " updated_at = excluded.updated_at",
        [image_id, status, class_id, len(labels), unsure, agreement, now_iso()],
    )
    checking = status == "auto" and db.execute(SPOT_CHECKED, [image_id]).fetchone()
    if checking:  # a person's answer is what the spot check waits for (a skip is none)
        db.execute("INSERT OR IGNORE INTO queue (image_id, priority) VALUES (?, ?)",
                   [image_id, SPOT_CHECK_PRIORITY])
    elif status != "needs_votes":
        db.execute("DELETE FROM queue WHERE image_id = ?", [image_id])
        # Others may still hold it (a late answer from a stale tab completed it): their
        # next card must not show an image that needs no more votes.
        db.execute("DELETE FROM leases WHERE image_id = ?", [image_id])
    else:
        db.execute(
            "INSERT OR IGNORE INTO queue (image_id, priority) VALUES (?, ?)",
            [image_id, queue_priority(db, image_id)],
        )
    return {"status": status, "class_id": class_id, "votes": len(labels), "unsure": unsure,
            "agreement": agreement}


def refresh_undervoted(db: Database) -> int:
    """Re-judge every image that has votes but fewer than it asks for: run when the number of
    people labeling changes (a QA image capped at one vote while one person labeled needs
    its second vote once a second person starts). Returns how many were re-judged."""
    ids = [
        r[0]
        for r in db.execute(
            "SELECT s.image_id FROM image_state s JOIN images i ON i.id = s.image_id"
            " WHERE i.votes_needed > 1 AND s.votes + s.unsure < i.votes_needed"
            " AND s.votes + s.unsure > 0"
        )
    ]
    for image_id in ids:
        refresh_state(db, image_id)
    return len(ids)


def refresh_multivote(db: Database, chunk: int = 500) -> int:
    """Re-judge every image whose votes name more than one class (after a new annotator
    model: weighted votes can change only those), `chunk` images per transaction so
    annotators' votes are never held up for long. Returns how many were re-judged."""
    ids = [r[0] for r in db.execute(
        "SELECT a.image_id FROM annotations a WHERE a.kind = 'label'"
        f" AND {EFFECTIVE} GROUP BY a.image_id HAVING count(DISTINCT a.class_id) > 1")]
    for start in range(0, len(ids), chunk):
        with write(db):
            for image_id in ids[start:start + chunk]:
                refresh_state(db, image_id)
        pause_for_writers()
    return len(ids)


def add_vote(
    db: Database,
    user_id: int,
    image_id: int,
    kind: str,
    class_id: int | None = None,
    seconds: float | None = None,
    source: str = "web",
) -> int:
    """Record one answer. Raises AlreadyAnswered (with nothing written) if this user
    already answered this image, StoreError for an unknown image or class."""
    if kind not in ANSWER_KINDS:
        raise StoreError(f"unknown answer {kind!r}; expected one of {', '.join(ANSWER_KINDS)}")
    if (kind == "label") != (class_id is not None):
        raise StoreError("a label needs a class; skip and unsure take none")
    with write(db):
        require_image(db, image_id)
        if class_id is not None:
            require_class(db, class_id)
        if answer_of(db, user_id, image_id) is not None:
            raise AlreadyAnswered(f"image {image_id} is already answered")
        newcomer = user_id is not None and db.execute(
            "SELECT 1 FROM annotations WHERE user_id = ? AND kind IN ('label', 'skip', 'unsure')"
            " LIMIT 1", [user_id]
        ).fetchone() is None
        cursor = db.execute(
            "INSERT INTO annotations (image_id, user_id, kind, class_id, source, created_at,"
            " seconds) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [image_id, user_id, kind, class_id, source, now_iso(), seconds],
        )
        db.execute("DELETE FROM leases WHERE image_id = ? AND user_id = ?", [image_id, user_id])
        refresh_state(db, image_id)
        if newcomer:
            refresh_undervoted(db)
    return cursor.lastrowid


def answer_unanswered(db: Database, answers: list[dict]) -> set[str]:
    """Give images already in the project the answer a later import found for them (dicts
    with sha256, answer 'label' or 'unsure', class_id), appended from source 'import', but
    only where nobody has answered the image yet: no effective label, skip, unsure,
    adjudication or review request, the import's own included. So importing a folder again
    never adds to or changes an image people (or an earlier import) have answered. Returns
    the hashes answered now."""
    answered: set[str] = set()
    if not answers:
        return answered
    with write(db):
        for item in answers:
            row = db.execute("SELECT id FROM images WHERE sha256 = ?", [item["sha256"]]).fetchone()
            if row is None or db.execute(
                "SELECT 1 FROM annotations a WHERE a.image_id = ? AND a.kind IN"
                f" ('label', 'skip', 'unsure', 'adjudicate', 'review') AND {EFFECTIVE} LIMIT 1",
                [row[0]],
            ).fetchone():
                continue
            db.execute(
                "INSERT INTO annotations (image_id, user_id, kind, class_id, source, created_at)"
                " VALUES (?, NULL, ?, ?, 'import', ?)",
                [row[0], item["answer"], item.get("class_id"), now_iso()],
            )
            if item["answer"] == "unsure":
                import_review_request(db, row[0], now_iso())
            refresh_state(db, row[0])
            answered.add(item["sha256"])
    return answered


def import_review_request(db: Database, image_id: int, stamp: str) -> None:
    """An imported 'maybe' image goes to review from the start, whatever votes_per_image
    asks: a review request from source 'import' beside its unsure answer (inside the
    caller's write transaction; the caller refreshes the state)."""
    db.execute(
        "INSERT INTO annotations (image_id, user_id, kind, source, created_at)"
        " VALUES (?, NULL, 'review', 'import', ?)",
        [image_id, stamp],
    )


def adjudicate(db: Database, user_id: int, image_id: int, class_id: int,
               gold: bool = False) -> int:
    """A reviewer's final label, appended as an 'adjudicate' annotation; a later one
    supersedes it (both stay on record). `gold` also records the answer as a gold image."""
    with write(db):
        require_image(db, image_id)
        require_class(db, class_id)
        stamp = now_iso()
        cursor = db.execute(
            "INSERT INTO annotations (image_id, user_id, kind, class_id, source, created_at)"
            " VALUES (?, ?, 'adjudicate', ?, 'review', ?)",
            [image_id, user_id, class_id, stamp],
        )
        if gold:
            db.execute(
                "INSERT INTO gold (image_id, class_id, user_id, created_at) VALUES (?, ?, ?, ?)",
                [image_id, class_id, user_id, stamp],
            )
        refresh_state(db, image_id)
    return cursor.lastrowid


def request_review(db: Database, user_id: int, image_id: int) -> int:
    """Send an image to the review queue (a suspected mislabel, say): appended as a 'review'
    annotation; the image is disputed until a reviewer adjudicates it."""
    with write(db):
        require_image(db, image_id)
        cursor = db.execute(
            "INSERT INTO annotations (image_id, user_id, kind, source, created_at)"
            " VALUES (?, ?, 'review', 'review', ?)",
            [image_id, user_id, now_iso()],
        )
        refresh_state(db, image_id)
    return cursor.lastrowid


def last_answer(db: Database, user_id: int) -> dict | None:
    """The user's latest answer that has not been undone: what 'undo' would take back."""
    rows = list(
        db.query(
            "SELECT a.* FROM annotations a WHERE a.user_id = ?"
            f" AND a.kind IN ('label', 'skip', 'unsure') AND {EFFECTIVE}"
            " ORDER BY a.id DESC LIMIT 1",
            [user_id],
        )
    )
    return rows[0] if rows else None


def _own_answer(db: Database, user_id: int, annotation_id: int) -> dict | None:
    """The answer row `annotation_id` if this user gave it (undone or not)."""
    if not is_row_id(annotation_id):
        return None
    rows = list(
        db.query(
            "SELECT a.* FROM annotations a WHERE a.id = ? AND a.user_id = ?"
            " AND a.kind IN ('label', 'skip', 'unsure')",
            [annotation_id, user_id],
        )
    )
    return rows[0] if rows else None


def _hand_back(db: Database, user_id: int, image_id: int, lease_seconds: int) -> None:
    """Lease an undone image to its user ahead of everything else they hold, if it still
    needs a vote and others' leases leave room: undoing a skip must not hand the user an
    image that was passed on to someone else meanwhile."""
    now = time.time()
    needed = votes_needed_sql(get_rules(db).votes_per_image, labelers(db))
    room = db.execute(
        f"SELECT {needed} - s.votes - s.unsure - (SELECT count(*) FROM leases l"
        "   WHERE l.image_id = i.id AND l.user_id != ? AND l.expires_at > ?)"
        " FROM images i JOIN image_state s ON s.image_id = i.id"
        " JOIN queue q ON q.image_id = i.id WHERE i.id = ?",
        [user_id, now, image_id],
    ).fetchone()
    if room is None or room[0] <= 0:
        return
    # handed_at 0 puts the image before anything else this user holds.
    db.execute(
        "INSERT INTO leases (image_id, user_id, handed_at, expires_at) VALUES (?, ?, 0, ?)"
        " ON CONFLICT (image_id, user_id) DO UPDATE SET handed_at = 0,"
        " expires_at = excluded.expires_at",
        [image_id, user_id, now + lease_seconds],
    )


def retract(
    db: Database, user_id: int, annotation_id: int, lease_seconds: int = 300
) -> int | None:
    """Undo one of the user's answers by appending a retraction; the image is handed back
    to the user first in line when it is free. Returns the image id, or None when there was
    nothing to undo (already undone: a repeated key press)."""
    with write(db):
        answer = _own_answer(db, user_id, annotation_id)
        if answer is None:
            raise StoreError(f"annotation {annotation_id} is not one of yours")
        already = db.execute(
            "SELECT 1 FROM annotations WHERE retracts_id = ?", [annotation_id]
        ).fetchone()
        if already:
            return None
        db.execute(
            "INSERT INTO annotations (image_id, user_id, kind, source, created_at, retracts_id)"
            " VALUES (?, ?, 'retract', ?, ?, ?)",
            [answer["image_id"], user_id, answer["source"], now_iso(), annotation_id],
        )
        refresh_state(db, answer["image_id"])
        _hand_back(db, user_id, answer["image_id"], lease_seconds)
    return answer["image_id"]


def undo_latest(db: Database, user_id: int, annotation_id: int,
                lease_seconds: int = 300) -> int | None:
    """The labeling page's undo: only the answer the page offers, this user's latest one that
    is not undone; an older answer raises NotHanded (undoing it would reopen a label the
    person moved past long ago). The same id again is harmless (None: already undone)."""
    with write(db):
        answer = _own_answer(db, user_id, annotation_id)
        if answer is None:
            raise StoreError(f"annotation {annotation_id} is not one of yours")
        if db.execute("SELECT 1 FROM annotations WHERE retracts_id = ?",
                      [annotation_id]).fetchone():
            return None
        latest = last_answer(db, user_id)
        if latest is None or latest["id"] != annotation_id:
            raise NotHanded(f"annotation {annotation_id} is not your latest answer; only that"
                            " one can be undone here")
        return retract(db, user_id, annotation_id, lease_seconds)


def state_of(db: Database, image_id: int) -> dict | None:
    rows = list(db.query("SELECT * FROM image_state WHERE image_id = ?", [image_id]))
    return rows[0] if rows else None

