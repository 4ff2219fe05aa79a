"""Auto-labeling a project: check that the serving round can vouch for its predictions, plan
the thresholds (plan.py) on its held-out predictions (`preview`: a dry run, what the page
and `--dry-run` show), append the auto-labels and send the spot check (`apply`, inside an
auto-label job: jobs/autolabel.py), and what the spot checks measured (`report`). No
Flask."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .. import store
from ..store import auto_labels
from ..store.rounds import serving_round
from .plan import HeldOut, Plan, PlanError, Pool, check_target, plan
from .plan import finish as finish_plan
from .spot_check import MARGIN, draw, measure, run_sample_size

MAX_MARGIN = 0.25  # of a finishing run's auto-labels, however few of the dataset they are


class AutoLabelError(ValueError):
    """Why nothing can be auto-labeled now; the message says what to do instead."""


@dataclass
class Preview:
    round: dict  # the serving round, whose predictions are labeled
    plan: Plan
    names: dict[int, str]  # class id -> name
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        finish = self.plan.finish
        return {"round_id": self.round["id"], "target": self.plan.target,
                "count": self.plan.count, "expected": self.plan.expected,
                "classes": [asdict(c) for c in self.plan.classes], "notes": self.notes,
                "finish": asdict(finish) | {"allowed": finish.allowed,
                                            "dataset_expected": finish.expected}
                if finish else None}


def preview(db, target: float, class_names: list[str] | None = None,
            finish: bool = False) -> Preview:
    """What auto-labeling at `target` would do now; writes nothing. With `finish`,
    `target` is the share of the whole dataset's labels right, and the model labels every
    pool image it can be measured on, or nothing (AutoLabelError says how far it is)."""
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
    if not round_row.get("pool_size"):
        raise AutoLabelError(f"round {rid} had no unlabeled images to predict: nothing is"
                             " left to auto-label")
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
    chosen = class_ids_named(classes, class_names) if class_names else list(classes)
    empty = [classes[c] for c in chosen if not np.any(given == c)]
    if class_names and empty:
        raise AutoLabelError(f"class {', '.join(map(repr, empty))} has no consensus labels"
                             " in the round: the model cannot be measured on it")
    ids, pool_predicted, pool_confidence = auto_labels.eligible(db, rid)
    held_out, pool = HeldOut(given, predicted, confidence), Pool(ids, pool_predicted,
                                                                  pool_confidence)
    if finish:
        made = finish_plan(target, held_out, pool, chosen, store.image_count(db),
                           auto_labels.expected_errors(db))
        _check_finish(made.finish, made.classes, classes)
    else:
        made = plan(target, held_out, pool, chosen)
    notes = []
    if round_row.get("mode") == "finetune":
        notes.append("the thresholds come from the head's held-out predictions; the labels"
                     " from the fine-tuned network's")
    return Preview(round_row, made, classes, notes)


def _check_finish(finish, planned, names: dict[int, str]) -> None:
    if finish.fits:
        return
    if finish.unmeasured:
        why = "; ".join(f"{names.get(c.class_id, c.class_id)}: {c.reason}" for c in planned
                        if c.class_id in finish.unmeasured)
        which = "that class" if len(finish.unmeasured) == 1 else "those classes"
        raise AutoLabelError(
            f"finishing labels every image, and the round cannot measure every class it"
            f" predicts ({why}): label more images of {which} and retrain, then try again")
    raise AutoLabelError(
        f"finishing now would leave about {finish.errors_before + finish.errors_new:.0f} of"
        f" the {finish.images} labels wrong ({finish.expected:.1%} right, counting people's"
        f" labels right), below the {finish.target:.1%} asked, which allows"
        f" {finish.allowed:.0f}: label more of the queue and retrain, then try again (or"
        " auto-label at a target precision, which labels only what the model is sure of)")


def class_ids_named(classes: dict[int, str], names: list[str]) -> list[int]:
    """The ids of the classes `names` (each once, in order); AutoLabelError naming any the
    project does not have. The CLI, the page and the run all read class names through it."""
    by_name = {name: class_id for class_id, name in classes.items()}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise AutoLabelError(f"no class named {', '.join(repr(n[:40]) for n in unknown)};"
                             f" the classes are {', '.join(classes.values())}")
    return [by_name[n] for n in dict.fromkeys(names)]


@dataclass
class Applied:
    run_id: int
    written: int  # auto-labels appended (fewer than planned where people answered first)
    spot_checked: int  # of them sent to people as the spot check


def apply(db, made: Preview, run_id: int, margin: float | None = MARGIN,
          seed: int = 0, of_dataset: bool = False) -> Applied:
    """Append the previewed auto-labels for the running run `run_id`, then send a seeded
    random sample of them to people as the spot check, sized for `margin` over every
    auto-label standing (None: no spot check), or with `of_dataset` (always when the run
    finishes the dataset) for `margin` over the dataset's share of labels right."""
    written = auto_labels.add_auto_labels(db, run_id, made.round["id"], made.plan.image_ids,
                                          made.plan.class_ids, made.plan.confidence)
    sent = 0
    if margin is not None and written:
        before = sum(p["labels"] for p in auto_labels.populations(db)) - written
        # Sized at the target (or the expected precision when lower): an optimistic
        # calibration would otherwise buy a sample too small to show it wrong.
        at = min(made.plan.target, made.plan.expected or made.plan.target)
        if made.plan.finish:
            at = made.plan.expected or at  # the target is the dataset's, not the labels'
        if made.plan.finish or of_dataset:
            # The margin is the dataset's: the auto-labels are a part of it, measured to
            # margin x (the dataset / the auto-labels standing).
            margin = min(MAX_MARGIN,
                         margin * store.image_count(db) / max(before + written, 1))
        size = run_sample_size(written, before, at, margin)
        drawn = draw(auto_labels.run_image_ids(db, run_id), size, seed=seed * 1_000_003 + run_id)
        sent = auto_labels.start_spot_check(db, run_id, drawn)
    return Applied(run_id, written, sent)


def report(db) -> dict | None:
    """Every auto-label standing, as the spot checks measure them so far: per class and
    overall (last), beside the calibration estimate; and the latest run."""
    run = auto_labels.latest_run(db)
    if run is None:
        return None
    # A finishing run's target is the dataset's, not each auto-label's: its auto-labels
    # may be less right than it as long as the dataset is (`dataset` says).
    measured = measure(auto_labels.spot_check_rows(db), auto_labels.populations(db),
                       None if run["finish"] else run["target"])
    standing = auto_labels.auto_label_counts(db)
    return {"run": run, "measured": [m.as_dict for m in measured], "standing": standing,
            "dataset": dataset_estimate(measured[-1], sum(standing.values()),
                                        store.image_count(db),
                                        run["target"] if run["finish"] else None)}


def dataset_estimate(overall, model_only: int, images: int,
                     target: float | None) -> dict | None:
    """The share of the whole dataset's labels right, people's labels counted right: the
    `model_only` images (labeled by the model, no person's answer since) right as often as
    the spot checks measured of the auto-labels (`overall`, its interval too), scaled by
    their share of the dataset. (A spot-checked image's label is the person's now.)"""
    if overall.accuracy is None or not images:
        return None
    share = model_only / images

    def scaled(value: float) -> float:
        return 1.0 - share * (1.0 - value)

    high = scaled(overall.high)
    return {"images": images, "auto": model_only, "accuracy": scaled(overall.accuracy),
            "low": scaled(overall.low), "high": high, "target": target,
            "below_target": target is not None and high < target}
