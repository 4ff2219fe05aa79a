"""Which pool images the model may label itself, so that what it labels meets a target
precision: one threshold per predicted class, chosen on the round's held-out predictions.

A round predicts each consensus-labeled image from a model that did not see its label
(cross-validation), and rescales every probability by one temperature fitted on those
predictions (learner/calibration.py). For a class c, the held-out images predicted c at or
above a confidence t show how often "c, at least t" is right; a threshold is accepted when

- the held-out estimate of that precision reaches the target: the right ones among them
  plus PRIOR_WEIGHT pseudo-votes at the mean calibrated confidence they had, over their
  count plus PRIOR_WEIGHT (with a few held-out images the calibration speaks for them, with
  many their record does), and at least MIN_ABOVE held-out images reach t; and
- the calibration estimate reaches it too: the mean calibrated confidence of the pool
  images that would be labeled.

The lowest accepted threshold labels the most images. A class with fewer than MIN_LABELS
held-out labels, or none of whose thresholds is accepted, gets no auto-labels and a reason.

Finishing the dataset (`finish`) asks instead for the share of the whole dataset's labels
that is right: the model labels every pool image, at once, when every class it predicts can
be measured and the expected wrong ones among them and among the auto-labels standing fit
in the dataset's allowance ((1 - target) x its images; people's consensus labels counted
right). All or nothing, because the allowance is best spent last: a run that spent it on
the weak model of the first rounds (bench/finish.py, digits) left the rest to people all
the same.

Knows numpy only; the store gives it arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_LABELS = 10  # held-out consensus labels a class needs before its precision is measured
MIN_ABOVE = 5  # held-out predictions of the class at or above an accepted threshold
PRIOR_WEIGHT = 10.0  # pseudo-counts of the calibration's expectation in the held-out estimate
LOWEST_TARGET, HIGHEST_TARGET = 0.5, 1.0  # a target precision lies strictly between
DEFAULT_TARGET = 0.98


class PlanError(ValueError):
    """A target that cannot be planned for; the message is for the person who asked."""


@dataclass
class HeldOut:
    """The round's held-out predictions of its consensus labels (positions align)."""

    given: np.ndarray  # consensus class id
    predicted: np.ndarray  # class id the held-out model gave
    confidence: np.ndarray  # its calibrated probability


@dataclass
class Pool:
    """The round's predictions for the images the model may label (nobody has answered)."""

    image_ids: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray


@dataclass
class ClassPlan:
    class_id: int
    labels: int  # held-out consensus labels of the class
    threshold: float | None = None  # lowest calibrated confidence labeled; None: none
    count: int = 0  # pool images it labels
    expected: float | None = None  # calibration estimate: their mean calibrated confidence
    held_out_precision: float | None = None  # held-out predictions at or above threshold
    held_out_count: int = 0
    reason: str = ""  # why the class gets no auto-labels


@dataclass
class Finish:
    """What finishing the dataset at `target` (the share of all its labels right) expects."""

    target: float
    images: int  # in the dataset
    errors_before: float  # expected wrong among the auto-labels standing (1 - confidence)
    errors_new: float  # ... among those the plan labels
    # Classes the model predicts for some pool image that the round cannot measure: while
    # there are any, the plan would finish only part of the dataset, spending the allowance
    # on the classes measured first (a first round's few: 84 % right on digits).
    unmeasured: list[int] = field(default_factory=list)

    @property
    def allowed(self) -> float:
        return (1.0 - self.target) * self.images

    @property
    def fits(self) -> bool:
        return not self.unmeasured and self.errors_before + self.errors_new <= self.allowed

    @property
    def expected(self) -> float:
        """The share of the dataset's labels expected right once people label the rest."""
        return 1.0 - (self.errors_before + self.errors_new) / max(self.images, 1)


@dataclass
class Plan:
    target: float
    classes: list[ClassPlan]
    image_ids: np.ndarray = field(repr=False)  # the pool images to label ...
    class_ids: np.ndarray = field(repr=False)  # ... with these classes
    confidence: np.ndarray = field(repr=False)  # ... and calibrated confidences
    finish: Finish | None = None  # set when the plan finishes the dataset

    @property
    def count(self) -> int:
        return len(self.image_ids)

    @property
    def expected(self) -> float | None:
        """The calibration estimate of the precision of everything labeled."""
        return float(self.confidence.mean()) if len(self.confidence) else None


def check_target(target: float) -> float:
    if not LOWEST_TARGET < target < HIGHEST_TARGET:
        raise PlanError(f"a target precision lies between {LOWEST_TARGET} and"
                        f" {HIGHEST_TARGET}, both excluded (got {target:g}); e.g. 0.98")
    return float(target)


def plan(target: float, held_out: HeldOut, pool: Pool, class_ids) -> Plan:
    """Thresholds for each class of `class_ids`, and the pool images they label."""
    return _plan(check_target(target), held_out, pool, class_ids, _plan_class)


def finish(target: float, held_out: HeldOut, pool: Pool, class_ids, images: int,
           errors_before: float) -> Plan:
    """Every pool image predicted as one of `class_ids` that can be measured (MIN_LABELS
    held-out labels, MIN_ABOVE held-out predictions), for a dataset of `images` whose
    standing auto-labels are expected to hold `errors_before` wrong; plan.finish says
    whether that fits `target`."""
    made = _plan(check_target(target), held_out, pool, class_ids, _finish_class)
    unmeasured = [c.class_id for c in made.classes
                  if c.threshold is None and np.any(pool.predicted == c.class_id)]
    made.finish = Finish(made.target, int(images), float(errors_before),
                         float(np.sum(1.0 - made.confidence)), unmeasured)
    return made


def _plan(target: float, held_out: HeldOut, pool: Pool, class_ids, plan_class) -> Plan:
    plans, chosen = [], []
    for class_id in class_ids:
        one = plan_class(int(class_id), target, held_out, pool)
        plans.append(one)
        if one.threshold is not None:
            chosen.append(np.flatnonzero((pool.predicted == class_id)
                                         & (pool.confidence >= one.threshold)))
    picked = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return Plan(target, plans, pool.image_ids[picked], pool.predicted[picked],
                pool.confidence[picked])


def _measurable(class_id: int, held_out: HeldOut):
    """(the class's plan so far, its held-out predictions' confidences, most confident
    first, and whether each was right); the plan carries a reason when it cannot be
    measured."""
    labels = int(np.sum(held_out.given == class_id))
    result = ClassPlan(class_id, labels)
    mine = held_out.predicted == class_id
    order = np.argsort(-held_out.confidence[mine], kind="stable")
    confidence = held_out.confidence[mine][order]
    right = (held_out.given[mine] == class_id)[order]
    if labels < MIN_LABELS:
        result.reason = (f"{labels} held-out consensus label{'s' * (labels != 1)}; needs"
                         f" {MIN_LABELS} to measure its precision")
    elif len(confidence) < MIN_ABOVE:
        result.reason = (f"the model predicted it for {len(confidence)} held-out images;"
                         f" needs {MIN_ABOVE}")
    return result, confidence, right


def _finish_class(class_id: int, target: float, held_out: HeldOut, pool: Pool) -> ClassPlan:
    result, confidence, right = _measurable(class_id, held_out)
    in_pool = pool.confidence[pool.predicted == class_id]
    if result.reason or not len(in_pool):
        result.reason = result.reason or "no unanswered pool image is predicted this class"
        return result
    result.threshold = float(in_pool.min())
    result.count = len(in_pool)
    result.expected = float(in_pool.mean())
    result.held_out_precision = float(right.mean())
    result.held_out_count = len(right)
    return result


def _plan_class(class_id: int, target: float, held_out: HeldOut, pool: Pool) -> ClassPlan:
    result, confidence, right = _measurable(class_id, held_out)
    if result.reason:
        return result
    counts = np.arange(1, len(confidence) + 1)
    precision = np.cumsum(right) / counts
    estimate = (np.cumsum(right) + PRIOR_WEIGHT * np.cumsum(confidence) / counts) / (
        counts + PRIOR_WEIGHT)
    in_pool = np.sort(pool.confidence[pool.predicted == class_id])[::-1]
    best = None
    for i in range(MIN_ABOVE - 1, len(confidence)):
        # Ties: a threshold takes every held-out image at its confidence, so judge it at
        # the last of them.
        if i + 1 < len(confidence) and confidence[i + 1] == confidence[i]:
            continue
        if estimate[i] < target:
            continue
        labeled = int(np.searchsorted(-in_pool, -confidence[i], side="right"))
        if labeled and in_pool[:labeled].mean() < target:
            continue
        best = i
    if best is None:
        top = int(np.argmax(estimate[MIN_ABOVE - 1:])) + MIN_ABOVE - 1
        result.reason = (f"no threshold reaches {target:.1%}: the best held-out estimate is"
                         f" {estimate[top]:.1%} (at {confidence[top]:.3f} or above)")
        return result
    result.threshold = float(confidence[best])
    result.held_out_precision = float(precision[best])
    result.held_out_count = int(best + 1)
    result.count = int(np.searchsorted(-in_pool, -confidence[best], side="right"))
    result.expected = float(in_pool[:result.count].mean()) if result.count else None
    if not result.count:
        result.reason = "no unanswered pool image is predicted this class that surely"
    return result
