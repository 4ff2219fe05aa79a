"""Consensus over several votes: the rules in force, the annotator-quality model that weighs
votes, adjudication by a reviewer, gold answers and review requests.

`decide` is the one place that turns an image's votes into its status; `labels.refresh_state`
calls it inside every vote's transaction.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache

from sqlite_utils import Database

from .connection import StoreError, is_row_id, now_iso, pause_for_writers, write

FINAL = ("agreed", "adjudicated")  # statuses whose label trains the model and is exported
STATUSES = ("needs_votes", "agreed", "disputed", "adjudicated")
FINAL_SQL = "('agreed', 'adjudicated')"


@dataclass(frozen=True)
class Rules:
    votes_per_image: int = 1
    qa_fraction: float = 0.1  # share of images drawn for the QA sample
    qa_votes: int = 3  # votes a QA image needs (capped by how many people label)
    agreement_threshold: float = 0.6  # below this share the image is disputed
    blind: bool = True  # annotators do not see each other's votes

    @classmethod
    def of(cls, config) -> Rules:
        """The rules from a project's settings (any object with these attributes)."""
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})

    def check(self) -> Rules:
        if self.votes_per_image < 1 or self.qa_votes < 1:
            raise StoreError("votes_per_image and qa_votes must be at least 1")
        if not 0.0 <= self.qa_fraction <= 1.0:
            raise StoreError("qa_fraction must be between 0 and 1")
        if not 0.0 < self.agreement_threshold <= 1.0:
            raise StoreError("agreement_threshold must be above 0 and at most 1")
        return self


def set_rules(db: Database, rules: Rules) -> None:
    """Store the rules (a no-op when they are already in force, so opening a project does not
    take the write lock every time)."""
    rules.check()
    wanted = {k: json.dumps(v) for k, v in asdict(rules).items()}
    if {r["key"]: r["value"] for r in db.query("SELECT key, value FROM rules")} == wanted:
        return
    with write(db):
        for key, value in wanted.items():
            db.execute(
                "INSERT INTO rules (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )


def get_rules(db: Database) -> Rules:
    stored = {r[0]: json.loads(r[1]) for r in db.execute("SELECT key, value FROM rules")}
    known = Rules.__dataclass_fields__
    return Rules(**{k: v for k, v in stored.items() if k in known})


def labelers(db: Database) -> int:
    """People who have answered at least one image: the most distinct votes an image can get
    (a QA image asks for qa_votes, but never more votes than there are people)."""
    return db.execute(
        "SELECT count(*) FROM users u WHERE EXISTS (SELECT 1 FROM annotations a"
        " WHERE a.user_id = u.id AND a.kind IN ('label', 'skip', 'unsure'))"
    ).fetchone()[0]


def votes_needed_now(votes_needed: int, base: int, people: int) -> int:
    """The votes an image needs now: at least the project's votes_per_image, and the extra
    votes of a QA image only as far as there are people labeling to give them."""
    return max(base, min(votes_needed, people))


def votes_needed_sql(base: int, people: int) -> str:
    """votes_needed_now in SQL, for an image aliased i."""
    return f"max({int(base)}, min(i.votes_needed, {int(people)}))"


# --- the annotator-quality model -------------------------------------------------------


def save_annotator_model(db: Database, model: dict, votes: int, trusted: bool) -> int:
    """Store a fitted model: {"class_ids": [...], "priors": [...], "confusions":
    {annotator key: K x K rows = true class}}. Annotator keys are user ids as strings, or
    "import" for labels that came with the images."""
    with write(db):
        cursor = db.execute(
            "INSERT INTO annotator_models (created_at, votes, trusted, model) VALUES (?, ?, ?, ?)",
            [now_iso(), votes, int(trusted), json.dumps(model)],
        )
    return cursor.lastrowid


def latest_annotator_model(db: Database) -> dict | None:
    row = db.execute(
        "SELECT id, created_at, votes, trusted, model FROM annotator_models ORDER BY id DESC"
        " LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return {"id": row[0], "created_at": row[1], "votes": row[2], "trusted": bool(row[3]),
            **_parse_model(row[4])}


@lru_cache(maxsize=8)
def _parse_model(text: str) -> dict:
    return json.loads(text)


def _weighted_class(model: dict, labels: list[tuple[int | None, int]]) -> int | None:
    """The class with the highest posterior under the annotator model, or None when the
    model cannot judge these votes (a class it has not seen)."""
    from ..consensus.annotator_model import weighted_label

    index = {c: i for i, c in enumerate(model["class_ids"])}
    if any(c not in index for _, c in labels):
        return None
    confusions = model["confusions"]
    votes = [(_annotator_key(u), index[c]) for u, c in labels]
    posterior = weighted_label(confusions, model["priors"], votes)
    best = sorted(range(len(posterior)), key=lambda k: -posterior[k])
    if len(best) > 1 and abs(posterior[best[0]] - posterior[best[1]]) < 1e-9:
        return None  # still a tie
    return model["class_ids"][best[0]]


def _annotator_key(user_id: int | None) -> str:
    return "import" if user_id is None else str(user_id)


def decide(
    labels: list[tuple[int | None, int]],
    unsure: int,
    needed: int,
    rules: Rules,
    model: dict | None = None,
) -> tuple[str, int | None, float | None]:
    """(status, class id, agreement share) from an image's effective votes: `labels` as
    (user id, class id) pairs, `unsure` the number of unsure votes. Skips do not count.
    The class is the weighted vote when a trusted annotator model exists and there is more
    than one vote, the plain majority otherwise; a tie gives no class."""
    decided = len(labels) + unsure
    if decided == 0:
        return "needs_votes", None, None
    counts = Counter(c for _, c in labels)
    ranked = counts.most_common()
    class_id = None
    if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
        class_id = ranked[0][0]
    if model is not None and model.get("trusted") and len(labels) > 1:
        class_id = _weighted_class(model, labels) if len(ranked) > 1 else class_id
    agreement = counts[class_id] / decided if class_id is not None else (
        ranked[0][1] / decided if ranked else 0.0)
    if decided < needed:
        return "needs_votes", class_id, agreement
    if class_id is None or unsure or agreement < rules.agreement_threshold:
        return "disputed", class_id, agreement
    return "agreed", class_id, agreement


# --- review: adjudication, review requests, gold ----------------------------------------


def _check_image(db: Database, image_id: int) -> None:
    if not is_row_id(image_id) or db.execute(
        "SELECT 1 FROM images WHERE id = ?", [image_id]
    ).fetchone() is None:
        raise StoreError(f"no image with id {image_id}")


def _check_class(db: Database, class_id: int) -> None:
    if not is_row_id(class_id) or db.execute(
        "SELECT 1 FROM classes WHERE id = ?", [class_id]
    ).fetchone() is None:
        raise StoreError(f"no class with id {class_id}")


def adjudicate(db: Database, user_id: int, image_id: int, class_id: int,
               gold: bool = False) -> int:
    """A reviewer's final label, appended as an 'adjudicate' annotation; a later one
    supersedes it (both stay on record). `gold` also records the answer as a gold image."""
    from .labels import refresh_state

    with write(db):
        _check_image(db, image_id)
        _check_class(db, class_id)
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
    from .labels import refresh_state

    with write(db):
        _check_image(db, image_id)
        cursor = db.execute(
            "INSERT INTO annotations (image_id, user_id, kind, source, created_at)"
            " VALUES (?, ?, 'review', 'review', ?)",
            [image_id, user_id, now_iso()],
        )
        refresh_state(db, image_id)
    return cursor.lastrowid


def set_gold(db: Database, user_id: int, image_id: int, class_id: int | None) -> None:
    """Mark an image as gold with its known answer (None takes it out of the gold set)."""
    with write(db):
        _check_image(db, image_id)
        if class_id is not None:
            _check_class(db, class_id)
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


# --- reading votes for review and quality -------------------------------------------------


def all_votes(db: Database) -> list[tuple[int, int | None, int]]:
    """Every effective label vote as (image id, user id or None for import, class id): the
    input of agreement measures and of the annotator model. Unsure votes and skips are not
    labels and are left out."""
    from .labels import EFFECTIVE

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


def refresh_multivote(db: Database, chunk: int = 500) -> int:
    """Re-judge every image whose votes name more than one class (after a new annotator
    model: weighted votes can change only those), `chunk` images per transaction so
    annotators' votes are never held up for long. Returns how many were re-judged."""
    from .labels import EFFECTIVE, refresh_state

    ids = [r[0] for r in db.execute(
        "SELECT a.image_id FROM annotations a WHERE a.kind = 'label'"
        f" AND {EFFECTIVE} GROUP BY a.image_id HAVING count(DISTINCT a.class_id) > 1")]
    for start in range(0, len(ids), chunk):
        with write(db):
            for image_id in ids[start:start + chunk]:
                refresh_state(db, image_id)
        pause_for_writers()
    return len(ids)


def annotator_seconds(db: Database) -> dict[int, list[float]]:
    """user id -> seconds spent on each effective answer (labels and unsure)."""
    from .labels import EFFECTIVE

    seconds: dict[int, list[float]] = {}
    for user_id, value in db.execute(
        "SELECT a.user_id, a.seconds FROM annotations a WHERE a.user_id IS NOT NULL"
        f" AND a.seconds IS NOT NULL AND a.kind IN ('label', 'unsure') AND {EFFECTIVE}"
    ):
        seconds.setdefault(user_id, []).append(value)
    return seconds
