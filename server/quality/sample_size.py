"""How many labels are enough: a learning curve fitted to the head's accuracy on subsamples.

The head (server/learner/head.py, as a round trains it) is trained on 5/10/25/50/100 % of the
training part of each cross-validation fold and scored on that fold's held-out part: every
label is held out once, the curve's points are means over folds x repeats, and the largest
point uses (k-1)/k of the labels. A curve

    inverse power law:        acc(n) = a - b * n^(-c)
    inverse exponential:      acc(n) = a - b * exp(-c * n / n_max)

is fitted with bounds (0 <= a <= 1, b >= 0, c > 0) by scipy's curve_fit, weighted by the
points' spread. `a` is the accuracy more labels approach; the band is the 5-95 % range of
curves refitted to bootstrap resamples of the repeats.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..learner.head import HeadModel, Projection, side_by_side

FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)
FOLDS = 5
REPEATS = 2  # subsamples per fold and fraction: FOLDS x REPEATS scores per point
BOOTSTRAP = 200
MODELS = ("inverse_power", "inverse_exponential")


def inverse_power(n, a, b, c):
    return a - b * np.power(np.asarray(n, dtype=np.float64), -c)


def inverse_exponential(n, a, b, c):
    # n is divided by the largest n measured (held in the fit), so c is of order one
    return a - b * np.exp(-c * np.asarray(n, dtype=np.float64))


@dataclass
class CurvePoint:
    labels: int  # training labels behind each score
    accuracies: list[float]  # one per fold x repeat

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def sd(self) -> float:
        return float(np.std(self.accuracies))


@dataclass
class LearningCurve:
    model: str
    params: tuple[float, float, float]  # a (asymptote), b, c
    covariance: np.ndarray = field(repr=False)
    points: list[CurvePoint] = field(default_factory=list)
    scale: float = 1.0  # labels are divided by this inside the exponential model
    bootstrap_params: np.ndarray = field(default=None, repr=False)  # (m, 3)

    @property
    def asymptote(self) -> float:
        return self.params[0]

    def _curve(self, n, params) -> np.ndarray:
        if self.model == "inverse_power":
            return inverse_power(n, *params)
        return inverse_exponential(np.asarray(n, dtype=np.float64) / self.scale, *params)

    def predict(self, labels: float | Sequence[float]) -> np.ndarray:
        return self._curve(labels, self.params)

    def band(self, labels: float | Sequence[float], level: float = 0.9) -> tuple[np.ndarray, ...]:
        """(low, high) accuracy at `labels` covering `level` of the bootstrap curves; the
        fit's own prediction both ways when there was no bootstrap."""
        if self.bootstrap_params is None or len(self.bootstrap_params) == 0:
            value = self.predict(labels)
            return value, value
        curves = np.array([self._curve(labels, p) for p in self.bootstrap_params])
        tail = (1 - level) / 2
        return np.quantile(curves, tail, axis=0), np.quantile(curves, 1 - tail, axis=0)

    def labels_needed(self, target: float, params: Sequence[float] | None = None) -> int | None:
        """Labels at which the curve reaches `target` accuracy; None when the target is at or
        above the asymptote (more labels of this kind are not expected to get there)."""
        a, b, c = self.params if params is None else params
        if target >= a:
            return None
        if target <= a - b:  # reached from the start: the curve's value at n = 1 (or 0)
            return 1
        if self.model == "inverse_power":
            n = (b / (a - target)) ** (1 / c)
        else:
            n = self.scale * math.log(b / (a - target)) / c
        return max(1, math.ceil(n))

    def labels_needed_range(self, target: float, level: float = 0.9) -> tuple[int | None, ...]:
        """(fewest, most) labels needed over `level` of the bootstrap curves; None for
        'never' (a curve whose asymptote stays below the target)."""
        if self.bootstrap_params is None or len(self.bootstrap_params) == 0:
            needed = self.labels_needed(target)
            return needed, needed
        needs = [self.labels_needed(target, p) for p in self.bootstrap_params]
        values = np.array([math.inf if x is None else x for x in needs])
        tail = (1 - level) / 2
        # No interpolation: between a finite count and 'never' there is no number.
        low = np.quantile(values, tail, method="lower")
        high = np.quantile(values, 1 - tail, method="higher")
        return (None if math.isinf(low) else int(low)), (None if math.isinf(high) else int(high))


def measure_points(
    features: np.ndarray,
    labels: np.ndarray,
    fractions: Sequence[float] = FRACTIONS,
    folds: int = FOLDS,
    repeats: int = REPEATS,
    seed: int = 0,
    unlabeled: np.ndarray | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> list[CurvePoint]:
    """Accuracy of the head trained on each fraction of every fold's training part, scored
    on the fold's held-out part. Subsamples are stratified (each class keeps its share, and
    at least one label)."""
    from .mislabels import fold_assignment

    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    basis = features if unlabeled is None else np.concatenate([features, unlabeled])
    projection = Projection.fit(basis, seed)  # label-free, so shared by every fit
    codes = np.unique(labels, return_inverse=True)[1]
    fold = fold_assignment(codes, folds, seed)
    scores: dict[float, list[tuple[int, float]]] = {f: [] for f in fractions}
    steps, done = folds * len(fractions), 0
    for k in range(folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        # The subsamples are drawn in order (the seed fixes them), then fitted side by side.
        subsamples = [(fraction, _stratified_subsample(train, codes, fraction, rng))
                      for fraction in fractions for _ in range(repeats if fraction < 1 else 1)]

        def accuracy(subsample, test=test):
            _fraction, chosen = subsample
            if len(np.unique(codes[chosen])) < 2:
                return None
            head = HeadModel.fit(features[chosen], labels[chosen], seed=seed,
                                 projection=projection)
            return float(np.mean(head.predict(features[test]) == labels[test]))

        for (fraction, chosen), measured in zip(subsamples, side_by_side(accuracy, subsamples),
                                                strict=True):
            if measured is not None:
                scores[fraction].append((len(chosen), measured))
        done += len(fractions)
        if progress is not None:
            progress(done / steps, f"fold {k + 1} of {folds}")
    return [
        CurvePoint(int(round(np.mean([n for n, _ in values]))), [a for _, a in values])
        for values in scores.values()
        if values
    ]


def _stratified_subsample(
    positions: np.ndarray, codes: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    if fraction >= 1:
        return positions
    chosen = []
    for code in np.unique(codes[positions]):
        members = positions[codes[positions] == code]
        take = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(chosen))


def fit_curve(
    points: Sequence[CurvePoint],
    model: str = "inverse_power",
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
) -> LearningCurve:
    """Fit `model` to the points' mean accuracies, then refit to `bootstrap` resamples of
    each point's scores for the band. Needs three points with distinct label counts."""
    if model not in MODELS:
        raise ValueError(f"unknown learning-curve model {model!r}; use one of {MODELS}")
    points = sorted(points, key=lambda p: p.labels)
    if len({p.labels for p in points}) < 3:
        raise ValueError("a learning curve needs accuracies at three or more label counts")
    n = np.array([p.labels for p in points], dtype=np.float64)
    scale = float(n.max()) if model == "inverse_exponential" else 1.0
    means = np.array([p.mean for p in points])
    fitted = _fit(model, n / scale, means, _sigma(points))
    if fitted is None:
        raise ValueError(f"the {model} curve did not converge on these points")
    params, covariance = fitted
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        resampled = np.array([np.mean(rng.choice(p.accuracies, len(p.accuracies))) for p in points])
        fitted = _fit(model, n / scale, resampled, _sigma(points), start=params)
        if fitted is not None:
            draws.append(fitted[0])
    return LearningCurve(
        model,
        tuple(float(v) for v in params),
        covariance,
        list(points),
        scale,
        np.array(draws).reshape(-1, 3),
    )


def _sigma(points: Sequence[CurvePoint]) -> np.ndarray:
    """Standard error of each point's mean; a floor keeps a point scored once (all labels,
    one fold) or with identical scores from getting infinite weight."""
    errors = np.array([p.sd / math.sqrt(len(p.accuracies)) for p in points])
    return np.maximum(errors, 0.002)


def _fit(
    model: str,
    n: np.ndarray,
    accuracy: np.ndarray,
    sigma: np.ndarray,
    start: Sequence[float] | None = None,
):
    from scipy.optimize import OptimizeWarning, curve_fit

    function = inverse_power if model == "inverse_power" else inverse_exponential
    if start is None:
        top = float(accuracy.max())
        start = (min(1.0, top + 0.02), max(1e-3, top - float(accuracy.min())) * 2, 0.5)
    upper_b = 1e3 if model == "inverse_power" else 10.0
    bounds = ([0.0, 0.0, 1e-3], [1.0, upper_b, 5.0])
    start = np.clip(start, np.array(bounds[0]) + 1e-9, np.array(bounds[1]) - 1e-9)
    try:
        with warnings.catch_warnings():
            # A covariance that cannot be estimated (3 points, 3 parameters) is reported as
            # infinite; the bootstrap band is the uncertainty used then.
            warnings.simplefilter("ignore", OptimizeWarning)
            params, covariance = curve_fit(
                function,
                n,
                accuracy,
                p0=start,
                sigma=sigma,
                absolute_sigma=True,
                bounds=bounds,
                maxfev=20_000,
            )
    except RuntimeError:  # no convergence: scipy's way to say it
        return None
    return params, covariance


def estimate_learning_curve(
    features: np.ndarray,
    labels: np.ndarray,
    model: str = "inverse_power",
    fractions: Sequence[float] = FRACTIONS,
    folds: int = FOLDS,
    repeats: int = REPEATS,
    seed: int = 0,
    unlabeled: np.ndarray | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> LearningCurve:
    """measure_points, then fit_curve: the whole estimate from embeddings and labels."""
    points = measure_points(features, labels, fractions, folds, repeats, seed, unlabeled, progress)
    return fit_curve(points, model, seed=seed)
