"""What a simulation labels and tests on: the oracle file read, matched to the project's
images, and split into images to label and held-out test images.

Images are matched to oracle rows by their path relative to the folder they were imported
from, else by their absolute path, else by their file name when that name is unique.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import store
from ..config import Project
from ..dataset.csv_writer import read_cell
from ..store.images import all_images
from .live_server import SimulationError

TEST_SHARE = 0.3


def read_labels_csv(path: Path) -> dict[str, str]:
    """file (relative path, absolute path or name) -> label, from a CSV with columns
    file,label. Rows with an empty label are left out."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = {(f or "").strip() for f in reader.fieldnames or []}
            if not {"file", "label"} <= fields:
                raise SimulationError(
                    f"{path} needs a header row with the columns file,label"
                    f" (found: {', '.join(sorted(fields)) or 'nothing'})"
                )
            # read_cell: the demo writes this file with the product's CSV writer, which
            # quotes a name a spreadsheet would run as a formula.
            rows = [{(k or "").strip(): read_cell((v or "").strip()) for k, v in row.items()}
                    for row in reader]
    except (OSError, UnicodeDecodeError) as exc:
        raise SimulationError(f"cannot read {path}: {exc}") from exc
    except csv.Error as exc:
        raise SimulationError(f"{path} is not a valid CSV file: {exc}") from exc
    return {row["file"]: row["label"] for row in rows if row["file"] and row["label"]}


def held_out(files: Iterable[str], seed: int) -> set[str]:
    """A seeded TEST_SHARE of the files, by hash of the seed and the name."""
    def key(name: str) -> float:
        return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16) / 16**8
    return {f for f in files if key(f) < TEST_SHARE}


def _examples(items: Iterable[str], limit: int = 5) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


@dataclass
class Plan:
    """What the simulated annotators know, keyed by image content (sha256), which stays
    the same in the copy while image ids may not."""

    truth: dict[str, str]  # sha256 -> true label, for every image that has one
    test: set[str]  # sha256 of the held-out images that have a label (scored, never labeled)
    images: int
    notes: list[str] = field(default_factory=list)  # what was left out, for the person

    @property
    def trainable(self) -> int:
        return len(set(self.truth) - self.test)


class _Matcher:
    """Finds an image of the project for a `file` entry of a CSV."""

    def __init__(self, images: list[dict]):
        self.by_rel = {}
        self.by_path = {}
        by_name: dict[str, list[str]] = {}
        for image in images:
            self.by_rel.setdefault(image["rel_path"], image["sha256"])
            self.by_path[image["path"]] = image["sha256"]
            by_name.setdefault(Path(image["rel_path"]).name, []).append(image["sha256"])
        self.by_name = {name: shas[0] for name, shas in by_name.items() if len(shas) == 1}
        self.ambiguous = {name for name, shas in by_name.items() if len(shas) > 1}

    def find(self, entry: str) -> str | None:
        entry = entry.replace("\\", "/")
        tries = ((entry, self.by_rel), (entry, self.by_path),
                 (entry.removeprefix("./"), self.by_rel), (Path(entry).name, self.by_name))
        for key, table in tries:
            if key in table:
                return table[key]
        return None

    def match(self, labels: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """(sha256 -> label, entries that name no image)."""
        found, unknown = {}, []
        for entry, label in labels.items():
            sha = self.find(entry)
            if sha is None:
                unknown.append(entry)
            else:
                found[sha] = label
        return found, unknown


def source_images(project: Project) -> list[dict]:
    db = store.connect(project.db_path, migrate=False)
    try:
        return all_images(db)
    finally:
        db.conn.close()


def source_classes(project: Project) -> list[str]:
    db = store.connect(project.db_path, migrate=False)
    try:
        return [c["name"] for c in store.classes(db)]
    finally:
        db.conn.close()


def make_plan(source: Project, oracle: dict[str, str],
              test_labels: dict[str, str] | None = None) -> Plan:
    """Match the oracle (and the test file, if any) to the project's images; say what
    could not be used. The test file's labels win over the oracle's for its images."""
    images = source_images(source)
    if not images:
        raise SimulationError(f"{source.root} has no images")
    matcher = _Matcher(images)
    truth, unknown = matcher.match(oracle)
    notes = []
    if not truth:
        raise SimulationError(
            "no row of the oracle file names an image of the project (its file column is"
            " matched to the image paths relative to the imported folder, or to file names);"
            f" e.g. {_examples(oracle, 3)}"
        )
    if unknown:
        notes.append(f"{len(unknown)} oracle rows name no image of the project and are"
                     f" ignored: {_examples(unknown)}")
    if test_labels is not None:
        test_truth, test_unknown = matcher.match(test_labels)
        if test_unknown:
            notes.append(f"{len(test_unknown)} rows of the test file name no image of the"
                         f" project and are ignored: {_examples(test_unknown)}")
        truth.update(test_truth)
        test = set(test_truth)
    else:
        rel = {image["sha256"]: image["rel_path"] for image in images}
        chosen = held_out((rel[sha] for sha in truth), source.config.seed)
        test = {sha for sha in truth if rel[sha] in chosen}
    classes = set(source_classes(source))
    strange = {label for label in truth.values() if label not in classes}
    if strange:
        raise SimulationError(
            f"the oracle uses labels that are not classes of the project: {_examples(strange)}"
            f" (classes: {', '.join(sorted(classes))})"
        )
    without = [image["rel_path"] for image in images if image["sha256"] not in truth]
    if without:
        notes.append(f"{len(without)} images have no label in the oracle; the simulated"
                     f" annotator skips them: {_examples(without)}")
    if matcher.ambiguous:
        notes.append(f"{len(matcher.ambiguous)} file names occur in several folders and are"
                     " matched only by their relative path")
    plan = Plan(truth, test, len(images), notes)
    if not plan.test:
        raise SimulationError("no held-out test images: the accuracy cannot be measured")
    if not plan.trainable:
        raise SimulationError("every labeled image is held out for testing: nothing to label")
    return plan


def plan_truth_by_id(project: Project, plan: Plan) -> dict[int, str]:
    """image id in `project` (a copy) -> true label, for the images the plan knows."""
    return {image["id"]: plan.truth[image["sha256"]] for image in source_images(project)
            if image["sha256"] in plan.truth}
