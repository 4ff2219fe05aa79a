"""Annotators who confuse two classes: from the Dawid-Skene confusion matrices (rows: the
true class, columns: the answer), the cells (annotator, A, B) where one annotator answers B
for A far more often than the others do. A person who files 40 % of shirts as T-shirts has a
low accuracy on one row only; the overall accuracy hides it, the cell does not.

bench/mislabels.py case (d): one of three simulated annotators answers B for 40 % of A, on
Fashion-MNIST and digits, 3 seeds each: that annotator's (A, B) cell is the first listed.
Knows numpy; nothing of the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# "Well above the others": P(B | A) at least this far above the other annotators' mean...
MIN_EXCESS = 0.15
# ...and at least this many times it (a cell of 0.20 against 0.15 is a hard pair for
# everyone, not one person's habit).
MIN_RATIO = 2.0


@dataclass(frozen=True)
class ConfusedPair:
    annotator: str
    true: int  # class index A
    answered: int  # class index B
    rate: float  # this annotator's P(answers B | true A)
    others: float  # the other annotators' mean of it

    @property
    def excess(self) -> float:
        return self.rate - self.others


def confused_pairs(confusions: Mapping[str, object], min_excess: float = MIN_EXCESS,
                   min_ratio: float = MIN_RATIO) -> list[ConfusedPair]:
    """Every (annotator, A, B) cell at least `min_excess` above and `min_ratio` times the mean
    of the other annotators' same cell, the largest excess first. Needs two annotators."""
    keys = list(confusions)
    if len(keys) < 2:
        return []
    stack = np.array([np.asarray(confusions[key], dtype=float) for key in keys])
    total = stack.sum(axis=0)
    found = []
    for i, key in enumerate(keys):
        others = (total - stack[i]) / (len(keys) - 1)
        excess = stack[i] - others
        np.fill_diagonal(excess, -np.inf)
        for true, answered in zip(*np.nonzero(excess >= min_excess), strict=True):
            rate, base = float(stack[i, true, answered]), float(others[true, answered])
            if rate >= min_ratio * base:
                found.append(ConfusedPair(key, int(true), int(answered), rate, base))
    return sorted(found, key=lambda pair: -pair.excess)
