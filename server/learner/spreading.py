"""Label spreading over the neighbour graph, blended with the logistic head.

With few labels, the unlabeled pool knows something the head does not: which images sit
together. Label spreading (Zhou et al. 2004) lets each label flow along the k-nearest-
neighbour graph (graph.py) to the images around it, iterating F = a S F + (1 - a) Y with
S = D^-1/2 W D^-1/2; the head's probabilities and the spread ones are then averaged. Each
class's labels enter with the same total weight, so a rare class is not drowned by a common
one (as the head's class_weight='balanced').
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA = 0.9  # how far labels travel along the graph (0: not at all)
ITERATIONS = 10  # 0.9 ** 10: a third of the start is left; more changed little
BLEND = 0.5  # the spread probabilities' share of the final ones


def operator(adjacency):
    """S = D^-1/2 W D^-1/2 (float32 CSR), the normalised graph labels spread along."""
    from scipy import sparse

    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inverse_root = np.zeros(len(degree))
    inverse_root[degree > 0] = 1.0 / np.sqrt(degree[degree > 0])
    d = sparse.diags(inverse_root)
    return (d @ adjacency @ d).tocsr().astype(np.float32)


def spread(s, labeled: np.ndarray, labels: np.ndarray, classes: int,
           alpha: float = ALPHA, iterations: int = ITERATIONS) -> np.ndarray:
    """(n, classes) probabilities for every node of the operator `s` from the labels of the
    nodes `labeled` (positions) with `labels` (column indices 0..classes-1). A node no
    label reaches gets the uniform distribution."""
    n = s.shape[0]
    counts = np.bincount(labels, minlength=classes).astype(np.float32)
    start = (1.0 / counts[labels]).astype(np.float32)  # Y's only non-zero cells
    f = np.zeros((n, classes), np.float32)
    f[labeled, labels] = start
    for _ in range(iterations):
        f = s @ f
        f *= alpha
        f[labeled, labels] += (1.0 - alpha) * start  # + (1 - a) Y, on its cells alone
    np.maximum(f, 0.0, out=f)
    total = f.sum(axis=1, keepdims=True)
    out = np.full((n, classes), 1.0 / classes)
    reached = total[:, 0] > 0
    # Normalised in float64: float32 rows summed to 1 only within 1e-7, and the
    # probabilities a round publishes and blends are float64 rows that sum to 1.
    reached_rows = f[reached].astype(np.float64)
    out[reached] = reached_rows / reached_rows.sum(axis=1, keepdims=True)
    return out


@dataclass
class Spread:
    """The spread probabilities of a round's images (by image id), over the fitted
    classes in order, to blend with the head's."""

    ids: np.ndarray  # sorted image ids
    probs: np.ndarray  # (len(ids), classes)
    blend: float = BLEND

    def mix(self, ids, head_probs: np.ndarray) -> np.ndarray:
        """The blend for `ids` (rows of head_probs); an image without spread probabilities
        keeps the head's."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.searchsorted(self.ids, ids)
        rows = np.minimum(rows, len(self.ids) - 1)
        known = self.ids[rows] == ids
        out = np.asarray(head_probs, dtype=np.float64).copy()
        out[known] = (1.0 - self.blend) * out[known] + self.blend * self.probs[rows[known]]
        return out


def spread_for(node_ids: np.ndarray, s, labeled_ids: np.ndarray, labels: np.ndarray,
               class_ids: list[int], blend: float = BLEND) -> Spread:
    """Spread the labels (class ids) of `labeled_ids` over the operator `s` whose rows are
    the sorted `node_ids`."""
    column = {c: i for i, c in enumerate(class_ids)}
    labeled_positions = np.searchsorted(node_ids, np.asarray(labeled_ids, dtype=np.int64))
    columns = np.array([column[int(c)] for c in labels], dtype=np.int64)
    return Spread(node_ids, spread(s, labeled_positions, columns, len(class_ids)), blend)
