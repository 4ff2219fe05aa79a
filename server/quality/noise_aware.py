"""The default mislabel ranking, "noise_aware": it finds, besides random slips, a run of
same-looking images filed under the wrong class and one class systematically filed as
another (label_groups.py says how, and what bench/mislabels.py measured).

1. head_knn's blend (out-of-fold head and nearest neighbours' labels), scored against the
   class-pair noise it shows.
2. The labels that first pass suspects (as many as cleanlab's find_label_issues estimates
   there are) are left out, and the blend is made again without them: a wrong label no
   longer trains the heads nor votes for its neighbours, so a class filed as another is
   seen more clearly (the confident joint grows where the noise is).
3. Same-label islands are judged with the island held out together; each member keeps the
   lower of the two views of its label.
4. Every label is scored by the posterior that it is right given the class-pair noise.

Knows numpy and cleanlab; the ranking's evidence comes in from mislabels.py.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import label_groups


def rank(evidence, blend_of: Callable[[np.ndarray | None], np.ndarray]):
    """(suspicion score, the blend's probabilities) for `evidence` (mislabels.Evidence);
    `blend_of(left_out)` makes head_knn's blend, with the rows `left_out` (a mask, or None)
    kept out of training and voting. Fills evidence.groups and evidence.pairs."""
    from cleanlab.filter import find_label_issues

    codes, classes = evidence.codes, int(evidence.codes.max()) + 1
    rows = np.arange(len(codes))
    first = blend_of(None)
    excess, _joint = label_groups.pair_excess(codes, first)
    posterior = label_groups.noisy_label_posterior(
        first, codes, label_groups.pair_noise(codes, excess))
    suspected = int(find_label_issues(codes, first, n_jobs=1).sum())
    left_out = np.zeros(len(codes), bool)
    left_out[np.argsort(posterior[rows, codes], kind="stable")[:suspected]] = True
    blend = blend_of(left_out) if suspected else first
    # The pairs' noise is read off the blend before the islands are judged: an island is
    # already scored as a group, and counted again in the pair it would make one class's
    # whole label suspect (27 digits 1 of one style, which look like 2 held out, did that).
    excess, joint = label_groups.pair_excess(codes, blend)
    noise = label_groups.pair_noise(codes, excess)
    nearest = evidence.nearest(2 * evidence.neighbours)

    def held_out_head(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return evidence.held_out_head(train[~left_out[train]], test)

    found = label_groups.islands(nearest, codes)
    evidence.groups = label_groups.judge_islands(found, nearest, codes, classes,
                                                 held_out_head, evidence.neighbour_weight)
    blend = blend.copy()
    for group in evidence.groups:
        # A member keeps the blend unless the evidence from outside its island says less
        # for its label: the island's own labels are what vouched for it.
        held_out = group.held_out / np.maximum(group.held_out.sum(axis=1, keepdims=True), 1e-12)
        held_out = np.clip(held_out, 1e-6, None)
        lower = held_out[np.arange(len(group.members)), group.given] < blend[
            group.members, group.given]
        blend[group.members[lower]] = held_out[lower]
    posterior = label_groups.noisy_label_posterior(blend, codes, noise)
    evidence.pairs = label_groups.filed_pairs(excess, joint, codes, posterior)
    # The score is the posterior's; the probabilities handed on (cleanlab's flags, the
    # suggested class) are the blend's: the posterior leans on the label it is given.
    return 1.0 - posterior[rows, codes], blend


MIN_PAIR = 5  # fewer images left in a pair finding than this: not shown


def findings(evidence) -> list[tuple[str, np.ndarray, int, int]]:
    """What the quality page shows as one finding each, from the evidence rank() filled:
    [(kind, members, given, looks like)], kind "together" for a misfiled island, "pair" for
    the images of a class filed as another. A pair's images that sit in an island already
    shown for the same two classes are that island's; the pair keeps the rest, if enough
    are left."""
    found = [("together", g.members, g.given, g.looks_like)
             for g in evidence.groups if g.misfiled]
    shown: dict[tuple[int, int], set] = {}
    for _kind, members, given, looks_like in found:
        shown.setdefault((given, looks_like), set()).update(members.tolist())
    for members, given, looks_like in evidence.pairs:
        rest = members[~np.isin(members, list(shown.get((given, looks_like), ())))]
        if len(rest) >= MIN_PAIR:
            found.append(("pair", rest, given, looks_like))
    return found
