"""What consensus is decided under: the rules in force, how many people label, and the stored
annotator-quality model that weighs votes. The decision itself is `consensus.rules.decide`;
`labels.refresh_state` reads these and calls it."""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import lru_cache

from sqlite_utils import Database

from ..consensus.rules import FINAL, STATUSES, Rules, RulesError
from .connection import StoreError, now_iso, write

__all__ = [
    "FINAL",
    "FINAL_SQL",
    "STATUSES",
    "Rules",
    "get_rules",
    "labelers",
    "latest_annotator_model",
    "save_annotator_model",
    "set_rules",
    "votes_needed_sql",
]

FINAL_SQL = "(" + ", ".join(f"'{status}'" for status in FINAL) + ")"  # FINAL, for `IN`


def set_rules(db: Database, rules: Rules) -> None:
    """Store the rules (a no-op when they are already in force, so opening a project does not
    take the write lock every time)."""
    try:
        rules.check()
    except RulesError as exc:
        raise StoreError(str(exc)) from exc
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


def votes_needed_sql(base: int, people: int) -> str:
    """consensus.rules.votes_needed_now in SQL, for an image aliased i."""
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
