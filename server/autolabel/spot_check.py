"""The spot check: a seeded random sample of each auto-label run's images goes to people
blind (the card shows no prediction), and their answers measure how often the model's
labels are right, overall and per class, with a 90 % interval. The sample is sized for a
margin over every auto-label standing: a run takes its share of that (the same rate for the
labels it adds), and the runs are strata of the estimate.

The thresholds are chosen on held-out predictions of the labeled images; where those differ
from the images the model labeled (a strategy picks the uncertain ones to label, a folder
holds another source), only a random sample of what it labeled measures it. Pure: counts
and arrays in, numbers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.90  # of the intervals
MARGIN = 0.02  # default half-width the sample is sized for, at the run's expected precision
MIN_SAMPLE = 30  # a smaller spot check measures too little to act on


def sample_size(labeled: int, expected: float | None, margin: float = MARGIN,
                confidence: float = CONFIDENCE) -> int:
    """Images to check for a `margin` half-width of the normal interval at `expected`
    precision, with the finite-population correction; at least MIN_SAMPLE (or all)."""
    if labeled <= 0:
        return 0
    if not 0 < margin < 1:
        raise ValueError(f"a spot-check margin lies between 0 and 1 (got {margin:g})")
    from scipy.stats import norm

    p = min(max(expected if expected is not None else 0.9, 0.5), 0.999)
    z = norm.ppf(0.5 + confidence / 2)
    infinite = z * z * p * (1 - p) / (margin * margin)
    finite = infinite / (1 + (infinite - 1) / labeled)
    return int(min(labeled, max(MIN_SAMPLE, math.ceil(finite))))


def run_sample_size(written: int, standing_before: int, expected: float | None,
                    margin: float = MARGIN) -> int:
    """A new run's spot check: the share its `written` labels have of a sample sized for
    all auto-labels standing once it is in (the earlier runs' samples cover the rest)."""
    total = standing_before + written
    if written <= 0:
        return 0
    whole = sample_size(total, expected, margin)
    return int(min(written, max(1, math.ceil(whole * written / total))))


def draw(image_ids: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of `size` of the image ids, ascending."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(np.asarray(image_ids), size=min(size, len(image_ids)),
                              replace=False))


def interval(right: float, checked: float,
             confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Jeffreys interval of right / checked (Beta(right + 1/2, wrong + 1/2) quantiles): its
    coverage is close to the nominal one at a spot check's sizes, where the exact
    Clopper-Pearson one is wider than it says. All right (none right): the bound is 1 (0)."""
    if checked <= 0:
        return 0.0, 1.0
    from scipy.stats import beta

    tail = (1 - confidence) / 2
    wrong = max(checked - right, 0.0)
    low = 0.0 if right <= 0 else float(beta.ppf(tail, right + 0.5, wrong + 0.5))
    high = 1.0 if wrong <= 1e-9 else float(beta.ppf(1 - tail, right + 0.5, wrong + 0.5))
    return low, high


@dataclass
class Measured:
    """What the spot checks measured for one class (class_id), or for every auto-label
    (None). Each auto-label run is a stratum sampled at its own rate, so the accuracy is
    the runs' measured accuracies weighted by how many labels each run stands for."""

    class_id: int | None
    labeled: int  # auto-labels standing (the population)
    sampled: int  # of them drawn for a spot check
    checked: int  # answered by a person with a label
    right: int  # ... the model's label
    unsure: int  # answered unsure: counted in neither
    accuracy: float | None  # estimated over the runs measured
    low: float
    high: float
    measured_share: float  # of the labels, those whose run has answers
    expected: float | None  # the calibration estimate: their mean calibrated confidence
    target: float | None  # None: the labels are not held to one (a finishing run's)

    @property
    def below_target(self) -> bool:
        """The whole interval lies below the target: measured worse than asked for."""
        return self.target is not None and self.checked > 0 and self.high < self.target

    @property
    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__} | {
            "below_target": self.below_target}


def measure(rows: list[dict], populations: list[dict],
            target: float | None) -> list[Measured]:
    """Per class (in class id order) and overall (last, class_id None). `rows`: one per
    spot-checked image, {"run_id", "class_id": the model's label, "answer": the person's
    class id or None, "unsure"}; `populations`: one per (run, class), {"run_id",
    "class_id", "labels": auto-labels standing, "confidence": their summed confidence}."""
    classes = sorted({p["class_id"] for p in populations})
    out = [_measure_group([r for r in rows if r["class_id"] == c],
                          [p for p in populations if p["class_id"] == c], c, target)
           for c in classes]
    return out + [_measure_group(rows, populations, None, target)]


def _measure_group(rows, populations, class_id, target) -> Measured:
    size: dict[int, int] = {}
    for p in populations:
        size[p["run_id"]] = size.get(p["run_id"], 0) + p["labels"]
    labeled = sum(size.values())
    strata = []  # (labels it stands for, checked, right)
    for run_id, labels in size.items():
        answered = [r for r in rows if r["run_id"] == run_id and r["answer"] is not None]
        if answered and labels:
            strata.append((labels, len(answered),
                           sum(1 for r in answered if r["answer"] == r["class_id"])))
    checked = sum(n for _, n, _ in strata)
    right = sum(k for _, _, k in strata)
    accuracy, (low, high) = None, (0.0, 1.0)
    if strata:
        weights = np.array([w for w, _, _ in strata], float)
        weights /= weights.sum()
        accuracy = float(sum(w * k / n for w, (_, n, k) in zip(weights, strata, strict=True)))
        # The Jeffreys interval at the weighted accuracy over the effective sample size of
        # the weighted sample (Kish): the pooled counts when every run was sampled at the
        # same rate, fewer when the runs' rates differ. A weighted sum of each run's own
        # posterior instead lay below the estimate when many small runs were all right.
        sizes = np.array([n for _, n, _ in strata], float)
        effective = 1.0 / float(np.sum(weights * weights / sizes))
        low, high = interval(accuracy * effective, effective)
        low = 0.0 if right == 0 else low
        high = 1.0 if right == checked else high
    confidence = sum(p["confidence"] for p in populations)
    return Measured(class_id, labeled, len(rows), checked, right,
                    sum(1 for r in rows if r["unsure"]), accuracy, low, high,
                    sum(w for w, _, _ in strata) / labeled if labeled else 0.0,
                    confidence / labeled if labeled else None, target)
