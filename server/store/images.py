"""Classes, images and the record of each import."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable

from sqlite_utils import Database

from .connection import StoreError, is_row_id, now_iso, write
from .consensus import get_rules
from .labels import import_review_request, refresh_state
from .rounds import unranked_priority

NAME_MAX = 64


def check_class_name(name: str) -> str:
    """Class names become folder names in exports, so they must be safe as one."""
    name = name.strip()
    if not name:
        raise StoreError("a class name cannot be empty")
    if len(name) > NAME_MAX:
        raise StoreError(f"class name {name[:20]!r}... is longer than {NAME_MAX} characters")
    if name in (".", "..") or any(ch in name for ch in "/\\") or not name.isprintable():
        raise StoreError(f"class name {name!r} cannot contain '/', '\\' or control characters")
    return name


def classes(db: Database) -> list[dict]:
    return list(db.query("SELECT id, name, position FROM classes ORDER BY position"))


def class_by_id(db: Database, class_id: int) -> dict | None:
    if not is_row_id(class_id):
        return None
    rows = list(db.query("SELECT id, name, position FROM classes WHERE id = ?", [class_id]))
    return rows[0] if rows else None


def add_classes(db: Database, names: Iterable[str]) -> list[dict]:
    """Add classes not yet known, in the order given; returns all classes."""
    cleaned = [check_class_name(n) for n in names]
    if len(set(cleaned)) != len(cleaned):
        raise StoreError("class names must be unique")
    with write(db):
        existing = {c["name"] for c in classes(db)}
        position = db.execute("SELECT coalesce(max(position), -1) FROM classes").fetchone()[0]
        for name in cleaned:
            if name not in existing:
                position += 1
                db.execute(
                    "INSERT INTO classes (name, position) VALUES (?, ?)", [name, position]
                )
    return classes(db)


def shuffle_key(seed: int, sha256: str) -> int:
    """A seeded position for an image that does not change as more images arrive."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def start_import(db: Database, source: str) -> int:
    with write(db):
        cursor = db.execute(
            "INSERT INTO import_runs (source, started_at, added, labeled, duplicates, skipped,"
            " ignored) VALUES (?, ?, 0, 0, 0, 0, 0)",
            [source, now_iso()],
        )
    return cursor.lastrowid


def known_hashes(db: Database, hashes: list[str]) -> dict[str, str]:
    """sha256 -> path of the images already in the project among `hashes`."""
    found: dict[str, str] = {}
    for start in range(0, len(hashes), 500):
        chunk = hashes[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in db.query(f"SELECT sha256, path FROM images WHERE sha256 IN ({marks})", chunk):
            found[row["sha256"]] = row["path"]
    return found


def is_qa(seed: int, sha256: str, fraction: float) -> bool:
    """Whether an image belongs to the QA sample: a seeded draw from its content, so the same
    image is drawn whichever import brings it."""
    digest = hashlib.sha256(f"qa:{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def _answer(image: dict) -> str | None:
    """The answer an image arrives with: 'label' (its class_id is the label), 'unsure' (its
    class_id, if any, only a hint) or None (unlabeled)."""
    if "answer" in image:
        return image["answer"]
    return "label" if image.get("class_id") is not None else None


def add_images(
    db: Database, import_id: int, images: list[dict], seed: int, votes_needed: int | None = None
) -> list[int]:
    """Insert checked images (dicts with sha256, path, rel_path, width, height, format, mode,
    bytes, and optional class_id, answer and split) in one transaction. An image arrives with
    the answer 'label' (the default when it has a class_id) as an 'import' label, with
    'unsure' as an 'import' unsure answer (class_id, if given, is the hint it was filed
    under), or with none. Each unlabeled image needs the rules' votes_per_image votes (or
    `votes_needed`), and qa_votes if it is drawn for the QA sample. Returns the new ids, in
    order. Hashes already present raise StoreError."""
    ids: list[int] = []
    stamp = now_iso()
    rules = get_rules(db)
    base_votes = votes_needed or rules.votes_per_image
    with write(db):
        for image in images:
            answer = _answer(image)
            qa = answer is None and is_qa(seed, image["sha256"], rules.qa_fraction)
            votes_needed = max(base_votes, rules.qa_votes) if qa else base_votes
            try:
                cursor = db.execute(
                    "INSERT INTO images (sha256, path, rel_path, width, height, format, mode,"
                    " bytes, import_id, added_at, votes_needed, shuffle_key, qa, split)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        image["sha256"],
                        image["path"],
                        image["rel_path"],
                        image["width"],
                        image["height"],
                        image["format"],
                        image["mode"],
                        image["bytes"],
                        import_id,
                        stamp,
                        votes_needed,
                        shuffle_key(seed, image["sha256"]),
                        int(qa),
                        image.get("split"),
                    ],
                )
            except sqlite3.IntegrityError as exc:  # a duplicate hash
                raise StoreError(f"cannot add {image['path']}: {exc}") from exc
            image_id = cursor.lastrowid
            ids.append(image_id)
            class_id = image.get("class_id")
            if answer == "unsure":
                db.execute(
                    "INSERT INTO annotations (image_id, user_id, kind, class_id, source,"
                    " created_at) VALUES (?, NULL, 'unsure', ?, 'import', ?)",
                    [image_id, class_id, stamp],
                )
                import_review_request(db, image_id, stamp)
                # The consensus rules decide, as for any review request. Doubtful images
                # are few; the two cases below write their one outcome directly, which
                # keeps an import of many thousands fast.
                refresh_state(db, image_id)
            elif answer is None:
                db.execute(
                    "INSERT INTO image_state (image_id, status, votes, unsure, updated_at)"
                    " VALUES (?, 'needs_votes', 0, 0, ?)",
                    [image_id, stamp],
                )
                db.execute(
                    "INSERT INTO queue (image_id, priority) VALUES (?, ?)",
                    [image_id, unranked_priority(shuffle_key(seed, image["sha256"]))],
                )
            else:
                db.execute(
                    "INSERT INTO annotations (image_id, user_id, kind, class_id, source,"
                    " created_at) VALUES (?, NULL, 'label', ?, 'import', ?)",
                    [image_id, class_id, stamp],
                )
                db.execute(
                    "INSERT INTO image_state (image_id, status, class_id, votes, unsure,"
                    " agreement, updated_at) VALUES (?, ?, ?, 1, 0, 1.0, ?)",
                    [image_id, "needs_votes" if votes_needed > 1 else "agreed", class_id, stamp],
                )
                if votes_needed > 1:
                    db.execute(
                        "INSERT INTO queue (image_id, priority) VALUES (?, ?)",
                        [image_id, unranked_priority(shuffle_key(seed, image["sha256"]))],
                    )
    return ids


def finish_import(db: Database, import_id: int, counts: dict, issues: list[dict],
                  understood: dict | None = None, warnings: Iterable[str] = ()) -> None:
    """Record the totals of an import, what it understood of the folder's layout and the
    warnings about it, and one row per skipped or duplicate file."""
    with write(db):
        db.execute(
            "UPDATE import_runs SET finished_at = ?, added = ?, labeled = ?, duplicates = ?,"
            " skipped = ?, ignored = ?, understood = ?, warnings = ? WHERE id = ?",
            [
                now_iso(),
                counts["added"],
                counts["labeled"],
                counts["duplicates"],
                counts["skipped"],
                counts["ignored"],
                json.dumps(understood or {}, ensure_ascii=False),
                json.dumps(list(warnings), ensure_ascii=False),
                import_id,
            ],
        )
        db.conn.executemany(
            "INSERT INTO import_issues (import_id, path, kind, reason) VALUES (?, ?, ?, ?)",
            [(import_id, i["path"], i["kind"], i["reason"]) for i in issues],
        )


def _run(row: dict) -> dict:
    """An import_runs row with its JSON read; runs from before migration 7 (or unfinished
    ones) understood nothing that was recorded: {} and []."""
    return {**row, "understood": json.loads(row["understood"] or "{}"),
            "warnings": json.loads(row["warnings"] or "[]")}


def import_runs(db: Database, limit: int = 20) -> list[dict]:
    return [_run(row) for row in
            db.query("SELECT * FROM import_runs ORDER BY id DESC LIMIT ?", [limit])]


def import_run(db: Database, import_id: int) -> dict | None:
    rows = list(db.query("SELECT * FROM import_runs WHERE id = ?", [import_id]))
    return _run(rows[0]) if rows else None


def import_issues(db: Database, import_id: int, limit: int = 500) -> list[dict]:
    return list(
        db.query(
            "SELECT path, kind, reason FROM import_issues WHERE import_id = ? ORDER BY id LIMIT ?",
            [import_id, limit],
        )
    )


def get_image(db: Database, image_id: int) -> dict | None:
    if not is_row_id(image_id):
        return None
    rows = list(db.query("SELECT * FROM images WHERE id = ?", [image_id]))
    return rows[0] if rows else None


def image_count(db: Database) -> int:
    return db.execute("SELECT count(*) FROM images").fetchone()[0]


def all_images(db: Database) -> list[dict]:
    """Every image's file and what the import found out about it, in id order."""
    return list(db.query(
        "SELECT id, sha256, path, rel_path, width, height, format, mode, bytes"
        " FROM images ORDER BY id"
    ))


def image_paths(db: Database) -> dict[int, str]:
    """image id -> the file's path."""
    return dict(db.execute("SELECT id, path FROM images").fetchall())


def paths_of(db: Database, ids) -> list[str]:
    """The files' paths of the images `ids`, in that order (KeyError for an unknown id)."""
    ids = [int(i) for i in ids]
    found = dict(db.execute(
        "SELECT i.id, i.path FROM json_each(?) j JOIN images i ON i.id = j.value",
        [json.dumps(ids)]).fetchall())
    return [found[i] for i in ids]


def typical_side(db: Database) -> int | None:
    """The median of the images' shorter sides (what the input size is chosen from), None
    for a project with no images."""
    count = image_count(db)
    if not count:
        return None
    row = db.execute(
        "SELECT min(width, height) AS side FROM images ORDER BY side LIMIT 1 OFFSET ?",
        [count // 2],
    ).fetchone()
    return int(row[0])
