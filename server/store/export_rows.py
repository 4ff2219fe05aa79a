"""The rows an export reads: every image with a final label, and the report of the ones
still waiting for a reviewer, each with its votes."""

from __future__ import annotations

from sqlite_utils import Database

from .consensus import FINAL, FINAL_SQL
from .labels import EFFECTIVE


def _with_voters(db: Database, rows: list[dict]) -> list[dict]:
    """Adds each row's effective votes as {voter: class name or 'unsure'}; labels that came
    with the import appear as '(import)'."""
    by_image: dict[int, dict] = {}
    for vote in db.query(
        "SELECT a.image_id, coalesce(u.name, '(import)') AS voter,"
        " CASE a.kind WHEN 'unsure' THEN 'unsure' ELSE c.name END AS answer"
        " FROM annotations a LEFT JOIN users u ON u.id = a.user_id"
        " LEFT JOIN classes c ON c.id = a.class_id"
        f" WHERE a.kind IN ('label', 'unsure') AND {EFFECTIVE} ORDER BY a.id"
    ):
        by_image.setdefault(vote["image_id"], {})[vote["voter"]] = vote["answer"]
    for row in rows:
        row["voters"] = by_image.get(row["id"], {})
    return rows


def labeled_images(db: Database, model: bool = False) -> list[dict]:
    """Every image with a consensus label (agreed or adjudicated), for export: original
    path, hash, label, status, vote count, agreement, the votes themselves, and the split
    it was imported with (`kept_split`, None when it came with none); `source` 'human'.
    With `model`, the images labeled by the model alone too (status 'auto'): `source`
    'model', with the auto-label's calibrated `confidence`."""
    statuses = FINAL_SQL if not model else "(" + ", ".join(
        f"'{status}'" for status in (*FINAL, "auto")) + ")"
    return _with_voters(db, list(
        db.query(
            "SELECT i.id, i.path, i.rel_path, i.sha256, i.split AS kept_split, c.name AS label,"
            " s.votes, s.status, s.agreement,"
            " CASE s.status WHEN 'auto' THEN 'model' ELSE 'human' END AS source,"
            " CASE s.status WHEN 'auto' THEN (SELECT x.confidence FROM annotations a"
            "   JOIN auto_answers x ON x.annotation_id = a.id WHERE a.image_id = i.id"
            f"   AND a.kind = 'auto' AND {EFFECTIVE} ORDER BY a.id DESC LIMIT 1) END"
            " AS confidence FROM image_state s"
            " JOIN images i ON i.id = s.image_id JOIN classes c ON c.id = s.class_id"
            f" WHERE s.status IN {statuses} ORDER BY i.id"
        )
    ))


def disputed_images(db: Database) -> list[dict]:
    """Images waiting for a reviewer, for the export's report: the votes' leading class
    (if any), status, agreement and the votes."""
    return _with_voters(db, list(
        db.query(
            "SELECT i.id, i.path, i.rel_path, i.sha256, c.name AS label, s.votes, s.status,"
            " s.agreement FROM image_state s JOIN images i ON i.id = s.image_id"
            " LEFT JOIN classes c ON c.id = s.class_id"
            " WHERE s.status = 'disputed' ORDER BY i.id"
        )
    ))
