"""Auto-labeling a project: check that the serving round can vouch for its predictions, plan
the thresholds (plan.py) on its held-out predictions, and append the auto-labels. The CLI
(`activelabel autolabel`) calls `preview`, then `apply` unless it is a dry run. No Flask."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import store
from ..store import auto_labels
from ..store.rounds import serving_round
from .plan import HeldOut, Plan, PlanError, Pool, check_target, plan


class AutoLabelError(ValueError):
    """Why nothing can be auto-labeled now; the message says what to do instead."""


@dataclass
class Preview:
    round: dict  # the serving round, whose predictions are labeled
    plan: Plan
    names: dict[int, str]  # class id -> name
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"round_id": self.round["id"], "target": self.plan.target,
                "count": self.plan.count, "expected": self.plan.expected,
                "classes": [c.as_dict for c in self.plan.classes], "notes": self.notes}


def preview(db, target: float, class_names: list[str] | None = None) -> Preview:
    """What auto-labeling at `target` would do now; writes nothing."""
    try:
        target = check_target(target)
    except PlanError as exc:
        raise AutoLabelError(str(exc)) from None
    round_row = serving_round(db)
    if round_row is None:
        raise AutoLabelError("no finished round yet: label some images and train one first"
                             " (activelabel retrain PROJECT, or Retrain on the admin page)")
    rid = round_row["id"]
    if round_row.get("mode") == "cold start":
        raise AutoLabelError(f"round {rid} ranked the images without a model (cold start):"
                             " label images of two classes or more, then retrain")
    given, predicted, confidence = auto_labels.held_out(db, rid)
    if round_row.get("temperature") is None or not len(given):
        raise AutoLabelError(f"round {rid} left no calibrated held-out predictions to measure"
                             " its precision on (it ran before auto-labels existed, or its"
                             " estimate failed): retrain, then auto-label")
    later = auto_labels.answers_after(db, round_row)
    if later:
        raise AutoLabelError(f"round {rid} is older than the newest labels: {later} answers"
                             " came after it and it did not learn from them. Retrain first"
                             " (activelabel retrain PROJECT), then auto-label")
    classes = {c["id"]: c["name"] for c in store.classes(db)}
    chosen = _chosen_classes(classes, given, class_names)
    ids, pool_predicted, pool_confidence = auto_labels.eligible(db, rid)
    made = plan(target, HeldOut(given, predicted, confidence),
                Pool(ids, pool_predicted, pool_confidence), chosen)
    notes = []
    if round_row.get("mode") == "finetune":
        notes.append("the thresholds come from the head's held-out predictions; the labels"
                     " from the fine-tuned network's")
    return Preview(round_row, made, classes, notes)


def _chosen_classes(classes: dict[int, str], given: np.ndarray,
                    names: list[str] | None) -> list[int]:
    if not names:
        return list(classes)
    by_name = {name: class_id for class_id, name in classes.items()}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise AutoLabelError(f"no class named {', '.join(map(repr, unknown))}; the classes"
                             f" are {', '.join(classes.values())}")
    chosen = [by_name[n] for n in dict.fromkeys(names)]
    empty = [classes[c] for c in chosen if not np.any(given == c)]
    if empty:
        raise AutoLabelError(f"class {', '.join(map(repr, empty))} has no consensus labels"
                             " in the round: the model cannot be measured on it")
    return chosen


def apply(db, made: Preview, requested_by: int | None = None) -> tuple[int, int]:
    """Append the previewed auto-labels: (run id, how many were written; fewer than
    planned where people answered or took images meanwhile)."""
    return auto_labels.add_auto_labels(
        db, made.round["id"], made.plan.target, made.as_dict(), made.plan.image_ids,
        made.plan.class_ids, made.plan.confidence, requested_by)
