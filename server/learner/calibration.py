"""Calibration: a temperature fitted on out-of-fold predictions, and the error it removes.

The head is strongly regularised (few labels) and label spreading averages over neighbours,
so both give probabilities less sure than they are right (bench/label_efficiency.py: an
expected calibration error of 0.1-0.2). One temperature, fitted on predictions for labeled
images that did not train them (cross-validation), rescales every probability; it keeps
each image's predicted class.
"""

from __future__ import annotations

import numpy as np

BINS = 10


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """probs ** (1 / T), renormalised per row (softmax of log p / T)."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, columns: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of the true `columns` under
    the held-out `probs` (T < 1 sharpens, T > 1 softens)."""
    from scipy.optimize import minimize_scalar

    log_p = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    rows = np.arange(len(columns))

    def loss(log_t: float) -> float:
        logits = log_p / np.exp(log_t)
        logits -= logits.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[rows, columns]))

    return float(np.exp(minimize_scalar(loss, bounds=(-4.0, 4.0), method="bounded").x))


def expected_calibration_error(probs: np.ndarray, right: np.ndarray, bins: int = BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by size."""
    confidence = np.asarray(probs).max(axis=1)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(right[which == b].mean() - confidence[which == b].mean())
                     * np.mean(which == b) for b in range(bins) if np.any(which == b)))
