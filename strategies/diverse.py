"""Batch-aware selection: uncertain, but not a batch of near-identical images."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import MiniBatchKMeans

from .registry import Ranking, register
from .uncertainty import _require, top_k, uncertainty_scores

BATCH = 100  # images an annotator labels between rounds; one per cluster within it
CANDIDATES_PER_PICK = 10


def round_robin(clusters: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Positions ordered so each cluster gives its most uncertain image before any
    cluster gives its second (clusters taken most uncertain first)."""
    order = np.lexsort((-scores, clusters))  # by cluster, then score descending
    sorted_clusters = clusters[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_clusters)) + 1]
    depth = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return order[np.lexsort((-scores[order], depth))]


@register("cluster_margin")
def query_cluster_margin(probs, embeddings, k: int, rng: np.random.Generator) -> Ranking:
    """Most uncertain (margin) 10x batch candidates, one per k-means cluster in turn."""
    probs = _require(probs)
    scores = uncertainty_scores("margin", probs)
    n = len(scores)
    if embeddings is None or n <= BATCH:
        return top_k(scores, k, rng)
    candidates, _ = top_k(scores, min(n, BATCH * CANDIDATES_PER_PICK), rng)
    points = np.asarray(embeddings[candidates], dtype=np.float32)
    # Identical images have identical embeddings; k-means cannot make more clusters than
    # there are distinct points (it warns and leaves clusters empty).
    distinct = len(np.unique(points, axis=0))
    clusters = MiniBatchKMeans(
        n_clusters=min(BATCH, distinct), n_init=1, random_state=int(rng.integers(2**31)),
        batch_size=1024,
    ).fit_predict(points)
    head = candidates[round_robin(clusters, scores[candidates])]
    rest = np.setdiff1d(np.arange(n), candidates, assume_unique=True)
    rest = rest[np.argsort(-scores[rest], kind="stable")]
    order = np.concatenate([head, rest])[: min(k, n)]
    return order, scores[order]
