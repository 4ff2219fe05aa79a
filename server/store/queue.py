"""Handing out images: the queue order, and leases so two annotators don't get the same one."""

from __future__ import annotations

import time

from sqlite_utils import Database

from . import labels
from .connection import write
from .consensus import get_rules, labelers, votes_needed_sql
from .labels import EFFECTIVE, NotHanded

ANSWERED_BY_ME = (
    "EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = {image} AND a.user_id = :user"
    f" AND a.kind IN ('label', 'skip', 'unsure') AND {EFFECTIVE})"
)


def next_images(db: Database, user_id: int, n: int = 2, lease_seconds: int = 300) -> list[int]:
    """The next `n` images for this user, leased to them: first what they already hold (an
    undone image first, then in the order handed out), then the queue's order, skipping
    images they answered and images others hold unless the image needs more votes."""
    now = time.time()
    params = {"user": user_id, "now": now, "n": n}
    with write(db):
        needed = votes_needed_sql(get_rules(db).votes_per_image, labelers(db))
        db.execute("DELETE FROM leases WHERE expires_at <= ?", [now])
        held = [
            row[0]
            for row in db.execute(
                "SELECT l.image_id FROM leases l WHERE l.user_id = :user"
                f" AND NOT {ANSWERED_BY_ME.format(image='l.image_id')}"
                " ORDER BY l.handed_at, l.image_id LIMIT :n",
                params,
            )
        ]
        fresh: list[int] = []
        if len(held) < n:
            params["n"] = n - len(held)
            fresh = [
                row[0]
                for row in db.execute(
                    "SELECT q.image_id FROM queue q JOIN images i ON i.id = q.image_id"
                    " JOIN image_state s ON s.image_id = q.image_id"
                    " WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.image_id = q.image_id"
                    "   AND l.user_id = :user)"
                    f" AND NOT {ANSWERED_BY_ME.format(image='q.image_id')}"
                    " AND s.votes + s.unsure + (SELECT count(*) FROM leases l"
                    f"   WHERE l.image_id = q.image_id) < {needed}"
                    " ORDER BY q.priority, q.image_id LIMIT :n",
                    params,
                )
            ]
        expires = now + lease_seconds
        for image_id in held:
            db.execute(
                "UPDATE leases SET expires_at = ? WHERE image_id = ? AND user_id = ?",
                [expires, image_id, user_id],
            )
        for offset, image_id in enumerate(fresh):
            db.execute(
                "INSERT INTO leases (image_id, user_id, handed_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                [image_id, user_id, now + offset * 1e-6, expires],
            )
    return held + fresh


def open_sql(db: Database, image: str) -> str:
    """SQL true when image `image` (with images aliased i, image_state s) may be handed to
    :user now: it needs votes, :user has not answered it, and others' unexpired leases (at
    :now) leave room for one more vote."""
    needed = votes_needed_sql(get_rules(db).votes_per_image, labelers(db))
    return (
        f"EXISTS (SELECT 1 FROM queue q WHERE q.image_id = {image})"
        f" AND NOT {ANSWERED_BY_ME.format(image=image)}"
        " AND s.votes + s.unsure + (SELECT count(*) FROM leases l"
        f"   WHERE l.image_id = {image} AND l.user_id != :user AND l.expires_at > :now)"
        f" < {needed}"
    )


def grid_open_sql(db: Database, image: str) -> str:
    """open_sql for a grid (a cluster page, a verify page): not an image a spot check sent
    (status 'auto', store/auto_labels.py), which is answered blind on the card, one at a
    time; a grid would show it under a class."""
    return f"{open_sql(db, image)} AND s.status = 'needs_votes'"


def require_handed(db: Database, user_id: int, image_id: int) -> None:
    """Inside a write transaction: raise NotHanded unless this person holds the image's
    lease (a card or grid they were shown, even if its time ran out) or the image is open to
    them under the overlap rules (a late answer nobody else has taken the place of). A vote
    anywhere else would change labels nobody asked this person for."""
    params = {"user": user_id, "now": time.time(), "image": image_id}
    held = db.execute("SELECT 1 FROM leases WHERE image_id = :image AND user_id = :user",
                      params).fetchone()
    if held is not None:
        return
    open_now = db.execute(
        "SELECT 1 FROM image_state s JOIN images i ON i.id = s.image_id"
        f" WHERE s.image_id = :image AND {open_sql(db, ':image')}", params).fetchone()
    if open_now is not None:
        return
    state = db.execute("SELECT status FROM image_state WHERE image_id = ?",
                       [image_id]).fetchone()
    if state is not None and state[0] != "needs_votes":
        raise NotHanded(f"image {image_id} needs no more votes (it is {state[0]})")
    raise NotHanded(f"image {image_id} was not handed to you (others hold the votes it"
                    " still needs)")


def add_handed_vote(db: Database, user_id: int, image_id: int, kind: str,
                    class_id: int | None = None, seconds: float | None = None,
                    source: str = "web") -> int:
    """A person's answer from a page: like labels.add_vote, but only on an image handed to
    them (require_handed). A second answer to the same image is still AlreadyAnswered
    first, so a double key press stays harmless."""
    with write(db):
        labels.require_image(db, image_id)
        if labels.answer_of(db, user_id, image_id) is not None:
            raise labels.AlreadyAnswered(f"image {image_id} is already answered")
        require_handed(db, user_id, image_id)
        return labels.add_vote(db, user_id, image_id, kind, class_id, seconds=seconds,
                               source=source)


def release_leases(db: Database, user_id: int) -> None:
    """Give back everything a user holds (on logout)."""
    with write(db):
        db.execute("DELETE FROM leases WHERE user_id = ?", [user_id])


def images_left(db: Database, user_id: int) -> int:
    """Images still needing votes that this user has not answered."""
    total = db.execute("SELECT count(*) FROM queue").fetchone()[0]
    mine = db.execute(
        "SELECT count(DISTINCT a.image_id) FROM annotations a JOIN queue q"
        " ON q.image_id = a.image_id WHERE a.user_id = ?"
        f" AND a.kind IN ('label', 'skip', 'unsure') AND {EFFECTIVE}",
        [user_id],
    ).fetchone()[0]
    return total - mine
