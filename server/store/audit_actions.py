"""What an audit finding does in one step: send a set of images to review (an annotator's
answers on the pair of classes they confuse, say), one transaction, appended review requests
from source 'audit', recorded as one action (bulk_actions kind 'audit_review') so it can be
undone as one: the undo appends a retraction of each request it made."""

from __future__ import annotations

from sqlite_utils import Database

from .connection import StoreError, is_row_id, now_iso, write
from .labels import EFFECTIVE, refresh_state

REVIEW = "audit_review"


def answers_on_pair(db: Database, user_id: int, true_class_id: int,
                    answered_class_id: int) -> list[int]:
    """Images this person labeled `answered_class_id` (an effective vote) whose consensus
    class is `true_class_id`, and that are neither waiting for review nor settled by a
    reviewer: their answers on the pair they confuse still to look at, by image id."""
    return [row[0] for row in db.execute(
        "SELECT a.image_id FROM annotations a JOIN image_state s ON s.image_id = a.image_id"
        f" WHERE a.user_id = ? AND a.kind = 'label' AND a.class_id = ? AND {EFFECTIVE}"
        " AND s.class_id = ? AND s.status NOT IN ('disputed', 'adjudicated')"
        " GROUP BY a.image_id ORDER BY a.image_id",
        [user_id, answered_class_id, true_class_id])]


def waiting_for_review(db: Database, image_ids: list[int]) -> set[int]:
    """The images among `image_ids` that are waiting for a reviewer now."""
    import json

    return {row[0] for row in db.execute(
        "SELECT s.image_id FROM json_each(?) j JOIN image_state s ON s.image_id = j.value"
        " WHERE s.status = 'disputed'", [json.dumps([int(i) for i in image_ids])])}


def send_to_review(db: Database, user_id: int, image_ids: list[int]) -> dict:
    """One review request (source 'audit') per image not already waiting for review, in one
    transaction, as one undoable action (none when every image is already waiting).
    Returns {"action_id", "sent", "already"}."""
    with write(db):
        for image_id in image_ids:
            if not is_row_id(image_id) or db.execute(
                    "SELECT 1 FROM images WHERE id = ?", [image_id]).fetchone() is None:
                raise StoreError(f"no image with id {image_id}")
        waiting = waiting_for_review(db, image_ids)
        todo = [i for i in dict.fromkeys(image_ids) if i not in waiting]  # once each, in order
        if not todo:  # nothing to send: no action to undo either
            return {"action_id": None, "sent": 0, "already": len(set(image_ids))}
        stamp = now_iso()
        action_id = db.execute(
            "INSERT INTO bulk_actions (user_id, kind, created_at) VALUES (?, ?, ?)",
            [user_id, REVIEW, stamp]).lastrowid
        sent, already = 0, len(set(image_ids)) - len(todo)
        for image_id in todo:
            annotation_id = db.execute(
                "INSERT INTO annotations (image_id, user_id, kind, source, created_at)"
                " VALUES (?, ?, 'review', 'audit', ?)", [image_id, user_id, stamp]).lastrowid
            db.execute("INSERT INTO bulk_items (action_id, image_id, annotation_id)"
                       " VALUES (?, ?, ?)", [action_id, image_id, annotation_id])
            refresh_state(db, image_id)
            sent += 1
        db.execute("UPDATE bulk_actions SET labeled = ?, passed = ? WHERE id = ?",
                   [sent, already, action_id])
    return {"action_id": action_id, "sent": sent, "already": already}


def last_review_action(db: Database, user_id: int) -> dict | None:
    """This person's latest audit action that is not undone."""
    rows = list(db.query(
        "SELECT * FROM bulk_actions WHERE user_id = ? AND kind = ? AND undone_at IS NULL"
        " ORDER BY id DESC LIMIT 1", [user_id, REVIEW]))
    return rows[0] if rows else None


def undo_review_action(db: Database, user_id: int) -> dict | None:
    """Take back this person's latest audit action: a retraction appended for each review
    request it made (a reviewer's decision since then stands: it is its own answer).
    Returns the action, or None when there is none to undo."""
    with write(db):
        action = last_review_action(db, user_id)
        if action is None:
            return None
        stamp = now_iso()
        for image_id, annotation_id in db.execute(
                "SELECT image_id, annotation_id FROM bulk_items WHERE action_id = ?",
                [action["id"]]).fetchall():
            db.execute(
                "INSERT INTO annotations (image_id, user_id, kind, source, created_at,"
                " retracts_id) VALUES (?, ?, 'retract', 'audit', ?, ?)",
                [image_id, user_id, stamp, annotation_id])
            refresh_state(db, image_id)
        db.execute("UPDATE bulk_actions SET undone_at = ? WHERE id = ?", [stamp, action["id"]])
    return action
