"""Query strategies: plain functions, registered by name, that rank the unlabeled pool.

Every strategy has one signature and one return type:

    strategy(probs, embeddings, k, rng) -> (indices, scores)

`probs` is (n, classes) predicted probabilities or None before any model exists,
`embeddings` is (n, d) or None; `indices` are the k pool positions to ask about first,
best first, and `scores` their scores (higher = more worth labeling). A round ranks the
whole pool through `rank_pool`, which puts the strategy's choice of the next batch first.
"""

from __future__ import annotations

from . import baseline, diverse, typical, uncertainty  # noqa: F401  (registers the built-ins)
from .registry import describe, get_strategy, names, rank_pool, register

__all__ = ["describe", "get_strategy", "names", "rank_pool", "register"]
