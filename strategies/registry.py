"""The registry: `@register("name")` adds a strategy, `get_strategy(name)` finds one."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Protocol

import numpy as np

# (pool positions to ask about first, best first; their scores, higher = more worth labeling)
Ranking = tuple[np.ndarray, np.ndarray]


class Strategy(Protocol):
    """What every registered strategy is: `probs` is the (n, classes) predicted
    probabilities of the pool (None before any model exists), `embeddings` its (n, d)
    features (None when the strategy was given none), `k` how many to return, `rng` the only
    source of randomness (seeded by the round), so a ranking can be reproduced."""

    __name__: str

    def __call__(self, probs: np.ndarray | None, embeddings: np.ndarray | None, k: int,
                 rng: np.random.Generator) -> Ranking: ...

_STRATEGIES: dict[str, Strategy] = {}


class UnknownStrategy(ValueError):
    """A strategy name nobody registered; the message lists the known ones."""


SIGNATURE = ("probs", "embeddings", "k", "rng")


def register(name: str) -> Callable[[Strategy], Strategy]:
    def decorator(fn: Strategy) -> Strategy:
        params = tuple(inspect.signature(fn).parameters)
        if params != SIGNATURE:
            raise TypeError(f"strategy {name!r} takes {params}; every strategy takes"
                            f" {SIGNATURE} (see Strategy)")
        if name in _STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        if not (fn.__doc__ or "").strip():
            raise ValueError(f"strategy {name!r} needs a docstring: its first line is its help")
        _STRATEGIES[name] = fn
        return fn

    return decorator


def get_strategy(name: str) -> Strategy:
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise UnknownStrategy(
            f"unknown strategy {name!r}; known strategies: {', '.join(sorted(_STRATEGIES))}"
        ) from None


def names() -> list[str]:
    return sorted(_STRATEGIES)


def describe(name: str) -> str:
    """The first line of the strategy's docstring."""
    return (get_strategy(name).__doc__ or "").strip().splitlines()[0]


def rank_pool(strategy: Strategy, probs: np.ndarray | None, embeddings: np.ndarray | None,
              batch: int | None, rng: np.random.Generator) -> Ranking:
    """A round's ranking of the whole pool. Annotators label about `batch` images before the
    next round (the project's retrain_every), so those come first, chosen by the strategy as
    a batch of that size; the rest follow in the strategy's whole-pool order. A batch-aware
    strategy picks differently for 20 than for the first 20 of a whole-pool ranking (at
    batches of 20, diverse_margin needed 860-1,040 labels in bench/label_efficiency.py
    where the whole-pool ranking's first 20 needed 1,080-1,160). Without a batch, or one the
    size of the pool, it is the strategy's whole-pool ranking alone."""
    n = len(probs) if probs is not None else len(embeddings)
    order, scores = strategy(probs, embeddings, n, rng)
    if not batch or batch >= n:
        return order, scores
    first, first_scores = strategy(probs, embeddings, batch, rng)
    later = ~np.isin(order, first)
    return np.concatenate([first, order[later]]), np.concatenate([first_scores, scores[later]])
