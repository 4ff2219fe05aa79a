"""Simulated annotators of known accuracy, and how well their consensus matches the truth.

A simulated annotator answers an image with its true class with probability `accuracy`,
else with one of the other classes, drawn uniformly. Both draws depend only on the seed,
the annotator's position and the image's content (sha256), so every strategy of a run, and
every rerun, meets the same mistakes on the same images.

After a run, `consensus_report` reads the simulated project's database (through the store)
and compares each image's consensus with the oracle: an agreed or adjudicated label counts
when it equals the truth; a disputed image, or one still waiting for votes, has no label and
counts as wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import store
from ..config import Project
from ..dataset import csv_writer

SINGLE_NAME = "sim-annotator"  # the login of a lone simulated annotator
# A simulated annotator labels a cluster page when at least this share of it is one class
# (by its own answers), toggling the rest; below that it marks the cluster mixed.
CONFIRM_SHARE = 0.75
GRID_COLUMNS = 8  # thumbnails per row on a 1,000-pixel-wide page, for keyboard-only counts


def parse_accuracies(text: str) -> list[float]:
    """'0.95,0.85,0.70' -> [0.95, 0.85, 0.7]; ValueError naming what is wrong."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise ValueError(f"expected accuracies separated by commas, e.g. 0.95,0.85,0.70;"
                         f" got {text!r}")
    accuracies = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number (an accuracy between 0 and 1)") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"accuracy {part} is not between 0 and 1")
        accuracies.append(value)
    return accuracies


def annotator_names(count: int) -> list[str]:
    """The logins of the simulated annotators: sim-annotator alone, else ann1..annN."""
    return [SINGLE_NAME] if count == 1 else [f"ann{i}" for i in range(1, count + 1)]


def _uniform(seed: int, position: int, sha256: str, draw: str) -> float:
    digest = hashlib.sha256(f"{seed}:{position}:{sha256}:{draw}".encode()).hexdigest()
    return int(digest[:13], 16) / 16**13


def noisy_answers(truth: dict[str, str], classes: Sequence[str], accuracy: float, seed: int,
                  position: int) -> dict[str, str]:
    """sha256 -> the answer of the annotator at `position` (0-based) with this accuracy:
    the truth, or with probability 1 - accuracy a uniformly drawn other class."""
    answers = {}
    for sha, label in truth.items():
        others = sorted(c for c in classes if c != label)
        if others and _uniform(seed, position, sha, "wrong") >= accuracy:
            label = others[int(_uniform(seed, position, sha, "class") * len(others))]
        answers[sha] = label
    return answers


@dataclass
class AnnotatorScore:
    name: str
    accuracy: float  # the accuracy it was given
    votes: int
    right: int  # votes equal to the truth

    @property
    def observed(self) -> float | None:
        return self.right / self.votes if self.votes else None


@dataclass
class ConsensusReport:
    """How one simulated project's consensus compares with the oracle, over the images the
    simulated annotators voted on."""

    strategy: str
    images: int  # images with at least one vote
    votes: int
    agreed: int
    adjudicated: int
    disputed: int
    waiting: int  # some votes, fewer than the image needs
    right: int  # agreed or adjudicated, and equal to the truth
    annotators: list[AnnotatorScore] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        """Share of the voted images whose consensus label is the truth (disputed and waiting
        images have none, so they count as wrong)."""
        return self.right / self.images if self.images else None

    @property
    def final_accuracy(self) -> float | None:
        """Share of the agreed or adjudicated labels (those that train) that are right."""
        final = self.agreed + self.adjudicated
        return self.right / final if final else None

    def lines(self) -> list[str]:
        def share(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        lines = [
            f"{self.strategy}: consensus over {self.images} images ({self.votes} votes):"
            f" {self.agreed} agreed, {self.adjudicated} adjudicated, {self.disputed} disputed,"
            f" {self.waiting} waiting for votes",
            f"{self.strategy}: consensus label equals the truth on {self.right} of"
            f" {self.images} images ({share(self.accuracy)}; disputed and waiting count as"
            f" wrong); {share(self.final_accuracy)} of the agreed/adjudicated labels are right",
        ]
        for a in self.annotators:
            lines.append(f"{self.strategy}:   {a.name} (accuracy {a.accuracy:g}):"
                         f" {a.right} of {a.votes} votes right ({share(a.observed)})")
        return lines


def consensus_report(project: Project, truth: dict[int, str], strategy: str,
                     accuracies: Sequence[float]) -> ConsensusReport:
    """Compare the consensus in `project`'s database with `truth` (image id -> class name)
    over the images that got votes."""
    names = annotator_names(len(accuracies))
    db = store.connect(project.db_path, migrate=False)
    try:
        class_names = {c["id"]: c["name"] for c in store.classes(db)}
        users = {u["id"]: u["name"] for u in store.list_users(db)}
        votes = store.all_votes(db)
        final = store.consensus_labels(db)
        statuses = {image_id: store.state_of(db, image_id)["status"]
                    for image_id in {image_id for image_id, _, _ in votes}}
    finally:
        db.conn.close()
    right = sum(1 for image_id in statuses
                if image_id in final and class_names[final[image_id]] == truth.get(image_id))
    scores = []
    for name, accuracy in zip(names, accuracies, strict=True):
        mine = [(image_id, class_id) for image_id, user_id, class_id in votes
                if users.get(user_id) == name]
        scores.append(AnnotatorScore(
            name, accuracy, len(mine),
            sum(1 for image_id, class_id in mine if class_names[class_id] == truth.get(image_id)),
        ))
    count = {status: sum(1 for s in statuses.values() if s == status)
             for status in store.STATUSES}
    return ConsensusReport(
        strategy=strategy, images=len(statuses), votes=len(votes), agreed=count["agreed"],
        adjudicated=count["adjudicated"], disputed=count["disputed"],
        waiting=count["needs_votes"], right=right, annotators=scores,
    )


def write_reports(reports: Iterable[ConsensusReport], out: Path) -> tuple[Path, Path]:
    """consensus.csv (one row per strategy) and annotators.csv (one per simulated
    annotator and strategy) in `out`."""
    reports = list(reports)
    out.mkdir(parents=True, exist_ok=True)
    consensus_path, annotators_path = out / "consensus.csv", out / "annotators.csv"

    def fmt(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    with consensus_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv_writer.writer(handle)
        writer.writerow(["strategy", "images", "votes", "agreed", "adjudicated", "disputed",
                         "waiting", "right", "consensus_accuracy", "final_label_accuracy"])
        writer.writerows(
            (r.strategy, r.images, r.votes, r.agreed, r.adjudicated, r.disputed, r.waiting,
             r.right, fmt(r.accuracy), fmt(r.final_accuracy))
            for r in reports
        )
    with annotators_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv_writer.writer(handle)
        writer.writerow(["strategy", "annotator", "accuracy", "votes", "right",
                         "observed_accuracy"])
        writer.writerows(
            (r.strategy, a.name, f"{a.accuracy:g}", a.votes, a.right, fmt(a.observed))
            for r in reports for a in r.annotators
        )
    return consensus_path, annotators_path


# --- grids: what a simulated annotator does with a page, and what it costs -----------------
#
# Actions are counted the way a person spends them, one per key press or click:
#   one by one: a key per image (its class, or s to skip it);
#   a cluster page: the class key (unless the class is already picked from the cluster's
#     previous page), one click per odd one out, Enter; marking the cluster mixed: s;
#   a verify page: the class key when the class differs from the previous page's, one click
#     per wrong prediction, Enter.
# Keyboard only, a toggle costs the arrow presses to reach the image (GRID_COLUMNS to a
# row, starting from the first thumbnail) plus space; `keyboard_actions` counts that.
# Images the simulation must leave unlabeled (held out for testing, or without an answer in
# the oracle) are skipped or toggled at no cost: a person would simply have labeled them.


@dataclass
class ActionTally:
    """Labels given and the actions they took, counted as above."""

    labels: int = 0
    actions: int = 0
    keys: int = 0  # the same with the keyboard only
    pages: int = 0
    mixed: int = 0  # clusters marked mixed
    one_by_one: int = 0  # images answered one at a time (skips included)

    def page(self, toggled: Sequence[int], pick_class: bool, labeled: int) -> None:
        self.actions += page_actions(toggled, pick_class)
        self.keys += keyboard_actions(toggled, pick_class)
        self.pages += 1
        self.labels += labeled

    def mixed_cluster(self) -> None:
        self.actions += 1
        self.keys += 1
        self.mixed += 1

    def single(self, labeled: bool, free: bool = False) -> None:
        """One image answered one by one; `free`: one the simulation must skip."""
        if not free:
            self.actions += 1
            self.keys += 1
            self.one_by_one += 1
        self.labels += int(labeled)

    def per_100(self, keyboard: bool = False) -> float | None:
        spent = self.keys if keyboard else self.actions
        return 100.0 * self.labels / spent if spent else None


def judge_cluster_page(answers: Sequence[str | None],
                       share: float = CONFIRM_SHARE) -> tuple[str, list[int]] | None:
    """(class, positions of the odd ones out) for a cluster page, given the annotator's own
    answer for each image in grid order (None: it has none, e.g. a held-out image, which it
    toggles); None when no class holds `share` of the answered images (the cluster is
    mixed)."""
    known = [a for a in answers if a is not None]
    if not known:
        return None
    top = max(sorted(set(known)), key=known.count)
    if known.count(top) < share * len(known):
        return None
    return top, [i for i, a in enumerate(answers) if a != top]


def judge_verify_page(answers: Sequence[str | None], predicted: str) -> list[int]:
    """Positions of the images a verify page predicts wrongly in the annotator's view."""
    return [i for i, a in enumerate(answers) if a != predicted]


def page_actions(toggled: Sequence[int], pick_class: bool) -> int:
    """Key presses and clicks for one grid page: the class key if needed, a click per
    toggled image, Enter."""
    return int(pick_class) + len(toggled) + 1


def keyboard_actions(toggled: Sequence[int], pick_class: bool,
                     columns: int = GRID_COLUMNS) -> int:
    """The same page with the keyboard only: arrow presses from the first thumbnail to each
    toggled image in turn, space on each."""
    moves, at = 0, 0
    for index in sorted(toggled):
        moves += abs(index // columns - at // columns) + abs(index % columns - at % columns)
        at = index
    return int(pick_class) + moves + len(toggled) + 1
