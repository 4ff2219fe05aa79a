"""What an export holds: the consensus labels, split so that no near-duplicate group
straddles train/val/test, optionally without the extra copies of each group. Shared by the
web export and `activelabel export`."""

from __future__ import annotations

from fractions import Fraction

from sqlite_utils import Database

from .. import store
from ..store import quality as quality_store
from . import exporter


def duplicate_groups(db: Database) -> list[list[int]]:
    """Near-duplicate groups (image ids) found by the latest finished quality run."""
    run = quality_store.latest_findings(db)
    if not run or not run["result"]:
        return []
    return [list(group) for group in run["result"].get("duplicates", {}).get("groups", [])]


def extra_copies(db: Database, groups: list[list[int]]) -> set[int]:
    """The images to leave out when dropping duplicates: those the admin marked 'drop', and in
    a group with no decision at all, every member but the first (lowest id)."""
    dropped = quality_store.dropped_images(db)
    decided = quality_store.decided_images(db)
    extra = set(dropped)
    for group in groups:
        if not decided.intersection(group):
            extra.update(sorted(group)[1:])
    return extra


def export_rows(db: Database, fractions: tuple[Fraction, ...], seed: int,
                drop_duplicates: bool = False, labels: str = "human") -> tuple[list[dict], int]:
    """(rows with their split, how many extra copies were left out). `labels`: 'human'
    (people's consensus labels), or 'all' (the model's auto-labels too, each with what the
    spot checks measured of its class)."""
    labeled = store.labeled_images(db, model=labels == "all")
    if labels == "all":
        _add_spot_checks(db, labeled)
    groups = duplicate_groups(db)
    left_out = 0
    if drop_duplicates and groups:
        extra = extra_copies(db, groups)
        kept = [row for row in labeled if row["id"] not in extra]
        left_out = len(labeled) - len(kept)
        labeled = kept
    return exporter.assign_splits(labeled, fractions, seed, groups), left_out


def _add_spot_checks(db: Database, rows: list[dict]) -> None:
    """On each model row: its class's measured accuracy, interval and images checked."""
    from ..autolabel.run import report

    found = report(db)
    names = {c["id"]: c["name"] for c in store.classes(db)}
    by_class = {names.get(m["class_id"]): m for m in (found["measured"] if found else [])
                if m["class_id"] is not None and m["checked"]}
    for row in rows:
        measured = by_class.get(row["label"]) if row["source"] == "model" else None
        if measured:
            row.update(spot_check=measured["accuracy"], spot_check_low=measured["low"],
                       spot_check_high=measured["high"], spot_checked=measured["checked"])
