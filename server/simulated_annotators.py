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

import csv
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import store
from .config import Project

SINGLE_NAME = "sim-annotator"  # the login of a lone simulated annotator


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
        writer = csv.writer(handle)
        writer.writerow(["strategy", "images", "votes", "agreed", "adjudicated", "disputed",
                         "waiting", "right", "consensus_accuracy", "final_label_accuracy"])
        writer.writerows(
            (r.strategy, r.images, r.votes, r.agreed, r.adjudicated, r.disputed, r.waiting,
             r.right, fmt(r.accuracy), fmt(r.final_accuracy))
            for r in reports
        )
    with annotators_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["strategy", "annotator", "accuracy", "votes", "right",
                         "observed_accuracy"])
        writer.writerows(
            (r.strategy, a.name, f"{a.accuracy:g}", a.votes, a.right, fmt(a.observed))
            for r in reports for a in r.annotators
        )
    return consensus_path, annotators_path
