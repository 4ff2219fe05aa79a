"""Counts for the labeling page and the admin page."""

from __future__ import annotations

from datetime import UTC, datetime
from statistics import median

from sqlite_utils import Database

from .consensus import STATUSES
from .labels import EFFECTIVE


def count_today(db: Database, user_id: int) -> int:
    """Answers (labels and unsure) this user gave since midnight UTC, undone ones excluded."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return db.execute(
        "SELECT count(*) FROM annotations a WHERE a.user_id = ? AND a.created_at >= ?"
        f" AND a.kind IN ('label', 'unsure') AND {EFFECTIVE}",
        [user_id, midnight.isoformat(timespec="milliseconds")],
    ).fetchone()[0]


def status_counts(db: Database) -> dict[str, int]:
    """Images per consensus status (needs_votes, agreed, disputed, adjudicated, auto)."""
    counts = dict.fromkeys(STATUSES, 0)
    for row in db.query("SELECT status, count(*) AS n FROM image_state GROUP BY status"):
        counts[row["status"]] = row["n"]
    return counts


def class_counts(db: Database) -> list[dict]:
    """Per class: images whose consensus label (agreed or adjudicated) is that class."""
    return list(
        db.query(
            "SELECT c.id, c.name, count(s.image_id) AS images"
            " FROM classes c LEFT JOIN image_state s"
            "   ON s.class_id = c.id AND s.status IN ('agreed', 'adjudicated')"
            " GROUP BY c.id ORDER BY c.position"
        )
    )


def annotator_stats(db: Database) -> list[dict]:
    """Per user: labels, skips, unsure, undos, today's count, median seconds per answer."""
    stats = []
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for user in db.query("SELECT id, name, role FROM users ORDER BY name"):
        row = dict(user)
        counts = {"label": 0, "skip": 0, "unsure": 0, "retract": 0}
        for r in db.query(
            "SELECT a.kind, count(*) AS n FROM annotations a WHERE a.user_id = ?"
            f" AND (a.kind = 'retract' OR {EFFECTIVE}) GROUP BY a.kind",
            [user["id"]],
        ):
            counts[r["kind"]] = r["n"]
        row.update(
            labels=counts["label"], skips=counts["skip"], unsure=counts["unsure"],
            undos=counts["retract"],
        )
        row["today"] = db.execute(
            "SELECT count(*) FROM annotations a WHERE a.user_id = ? AND a.created_at >= ?"
            f" AND a.kind IN ('label', 'unsure') AND {EFFECTIVE}",  # as on the labeling card
            [user["id"], midnight.isoformat(timespec="milliseconds")],
        ).fetchone()[0]
        seconds = [
            r[0]
            for r in db.execute(
                "SELECT a.seconds FROM annotations a WHERE a.user_id = ? AND a.kind IN ('label',"
                f" 'unsure') AND a.seconds IS NOT NULL AND {EFFECTIVE}",
                [user["id"]],
            )
        ]
        row["median_seconds"] = round(median(seconds), 1) if seconds else None
        stats.append(row)
    return stats


def answers_version(db: Database) -> tuple:
    """Changes whenever anything the agreement report reads changes: answers are
    append-only (an undo is a new row), so the last annotation id moves with every vote,
    undo, adjudication; plus the latest annotator model, the classes and the users."""
    return tuple(db.execute(
        "SELECT (SELECT coalesce(max(id), 0) FROM annotations),"
        " (SELECT coalesce(max(id), 0) FROM annotator_models),"
        " (SELECT count(*) FROM classes), (SELECT count(*) FROM users)").fetchone())
