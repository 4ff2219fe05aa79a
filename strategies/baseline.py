"""The baseline every other strategy is measured against."""

from __future__ import annotations

import numpy as np

from .registry import Ranking, register


@register("random")
def query_random(
    probs: np.ndarray | None, embeddings: np.ndarray | None, k: int, rng: np.random.Generator
) -> Ranking:
    """A seeded random order of the pool: the baseline, and the queue before any model."""
    n = len(probs) if probs is not None else len(embeddings)
    order = rng.permutation(n)[: min(k, n)]
    return order, np.zeros(len(order))
