"""The registry: `@register("name")` adds a strategy, `get_strategy(name)` finds one."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Ranking = tuple[np.ndarray, np.ndarray]
Strategy = Callable[..., Ranking]

_STRATEGIES: dict[str, Strategy] = {}


class UnknownStrategy(ValueError):
    """A strategy name nobody registered; the message lists the known ones."""


def register(name: str) -> Callable[[Strategy], Strategy]:
    def decorator(fn: Strategy) -> Strategy:
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
