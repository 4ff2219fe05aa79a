"""How many more human labels until the model can label the rest: the trend, over the
latest rounds, of the images that neither people nor the model (at the target) have
labeled, against people's labels. A straight line in log scale, fitted to the last few
rounds: a rough guide, said so wherever it is shown. Pure."""

from __future__ import annotations

import math

import numpy as np

ROUNDS = 5  # the latest rounds the trend is fitted to
REST = 0.01  # "the rest": all but this share of the images


def labels_to_finish(points: list[tuple[int, int]], total: int) -> int | None:
    """`points`: (people's labels, images left after what the model could label), one per
    round, oldest first. The labels still needed until the images left fall to REST of
    `total` (0 when they have); None while the trend cannot say (fewer than three rounds,
    or the images left are not falling)."""
    goal = max(REST * total, 1.0)
    if points and points[-1][1] <= goal:
        return 0
    recent = [(x, y) for x, y in points[-ROUNDS:] if y > 0]
    if len(recent) < 3 or len({x for x, _ in recent}) < 2:
        return None
    xs = np.array([x for x, _ in recent], float)
    ys = np.log([y for _, y in recent])
    slope, intercept = np.polyfit(xs, ys, 1)
    if slope >= 0:
        return None
    needed = (math.log(goal) - intercept) / slope
    return max(0, int(math.ceil(needed - xs[-1])))
