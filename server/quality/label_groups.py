"""Groups filed under the wrong class, and the class-pair noise of a set of labels.

Two kinds of error that a one-image-at-a-time audit misses (bench/mislabels.py cases b, c):

- A run of same-looking images filed under one wrong class (someone sorting files drags 30
  sneakers into the "Shirt" folder). Each one's nearest neighbours are the others, all
  "Shirt", and a head trained on them learns that corner as "Shirt": the kNN vote and the
  out-of-fold head both vouch for the run. Here such a run is an *island*: images joined by
  same-label edges of the k-nearest-neighbour graph into a component that is small for its
  class, whose neighbours outside the component mostly carry other labels. Each island is
  then judged with the whole island held out: a head trained without any island's images,
  and the labels of its members' neighbours outside it.
- One class systematically filed as another (a quarter of the shirts labeled T-shirt).
  Shirts that look alike get either label, so neither the kNN vote nor the head can tell
  which shirt is wrong; what stands out is the pair. cleanlab's confident joint counts, for
  each (given, true) pair, the images confidently of the true class; confusion between two
  classes that look alike fills both directions about equally, a filing habit only one.
  Its one-directional excess estimates P(given | true), and each image is scored by the
  posterior that its label is right given that noise (Bayes: P(true = j | x, given) is
  proportional to P(given | true = j) P(j | x)).

On bench/mislabels.py (3 seeds; (a) 5 % uniform flips AP, (b) 25 % of one class filed as
another and (c) a run of 20-50, R@3m: the share of the planted among the first 3 x planted),
head_knn -> the default that uses this module (noise_aware.py): Fashion-MNIST (10,000
labels, 64x64 features) (a) 0.923 -> 0.894, (b) 0.529 -> 0.937, (c) 0.019 -> 0.637 (found
in 2 seeds of 3; the third is a run of shirts filed as Coat, so close to real coats that it
joins their component); digits (a) 0.973 -> 0.915, (b) 0.962 -> 1.000, (c) 0.828 -> 1.000.

Knows numpy, scipy and cleanlab; nothing of the server.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ISLAND_NEIGHBOURS = 10  # the graph's edges: each image's nearest
MIN_GROUP = 5  # smaller components are single odd images: the per-image ranking has them
MAX_CLASS_SHARE = 0.5  # a component with half its class or more is the class itself
OUTSIDE = 25  # neighbours outside the group that judge it
MAX_OWN_LABEL = 0.5  # an island's outside neighbours carry its label less often than this
# The chance that any label was filed under any other class, beyond the estimated pairs:
# images of a class with no suspected pair still rank by how little their label fits.
NOISE_FLOOR = 0.01
PAIR_SIGNIFICANCE = 3.0  # standard deviations: see filed_pairs


@dataclass
class MisfiledGroup:
    """Images that sit together, all filed under `given`, that as a group look like
    `looks_like` (label values): one finding, "23 images filed as 7 look like 1"."""

    positions: np.ndarray  # into the images given to find_mislabels, most suspicious first
    given: object
    looks_like: object
    score: float  # the members' mean suspicion
    # "together": they sit together in embedding space (a run filed in the wrong folder);
    # "pair": they are the images filed as one class of a pair filed as the other.
    kind: str = "together"


@dataclass
class LabelGroup:
    """An island: `members` (positions) all filed as code `given`, with the probabilities
    judged from outside it (head without the island, blended with outside neighbours)."""

    members: np.ndarray
    given: int
    outside_own_label: float  # share of the outside neighbours that carry `given`
    held_out: np.ndarray  # (len(members), classes)

    @property
    def looks_like(self) -> int:
        """The class the outside evidence favours for the group as a whole."""
        return int(self.held_out.mean(axis=0).argmax())

    @property
    def misfiled(self) -> bool:
        """Whether the group as a whole looks like another class than the one it is filed
        under: what the quality page shows as one finding."""
        return self.looks_like != self.given


def islands(nearest: np.ndarray, codes: np.ndarray, k: int = ISLAND_NEIGHBOURS) -> list:
    """Same-label components of the k-nearest-neighbour graph (`nearest`: (n, >= k)
    positions, nearest first) that are at least MIN_GROUP images and under MAX_CLASS_SHARE
    of their class, and whose members' nearest images outside the component mostly carry
    other labels: [(members, share of own label outside)]. (Taking the components again at
    k = 5 and 3 inside the ones too big, to cut a run off the class it is filed under, found
    no more runs in bench/mislabels.py and cost AP on digits.)"""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(codes)
    rows = np.repeat(np.arange(n), k)
    cols = nearest[:, :k].ravel()
    same = codes[rows] == codes[cols]
    edges = csr_matrix((np.ones(int(same.sum())), (rows[same], cols[same])), shape=(n, n))
    _count, component = connected_components(edges + edges.T, directed=False)
    sizes = np.bincount(component)
    class_sizes = np.bincount(codes)
    found = []
    for label in np.flatnonzero(sizes >= MIN_GROUP):
        members = np.flatnonzero(component == label)
        if len(members) >= MAX_CLASS_SHARE * class_sizes[codes[members[0]]]:
            continue
        outside = outside_neighbours(nearest, members)
        share = float(np.mean(codes[outside] == codes[members[0]]))
        if share < MAX_OWN_LABEL:
            found.append((members, share))
    return found


def outside_neighbours(nearest: np.ndarray, members: np.ndarray,
                       count: int = OUTSIDE) -> np.ndarray:
    """(len(members), <= count) the members' nearest images that are not members (padded
    with each row's last found, so every row has the same length)."""
    inside = np.zeros(int(max(nearest.max(), members.max())) + 1, bool)
    inside[members] = True
    rows = []
    for position in members:
        others = nearest[position][~inside[nearest[position]]][:count]
        rows.append(others if len(others) else nearest[position][:1])
    width = max(len(r) for r in rows)
    return np.array([np.pad(r, (0, width - len(r)), mode="edge") for r in rows])


def judge_islands(found: list, nearest: np.ndarray, codes: np.ndarray, classes: int,
                  held_out_head, neighbour_weight: float) -> list[LabelGroup]:
    """Each island's probabilities from outside it: `held_out_head(train, test)` gives
    (len(test), classes) probabilities from a head trained on the positions `train` only,
    here everything outside every island (one fit for all of them); blended with the label
    share of the members' nearest neighbours outside their island."""
    if not found:
        return []
    keep = np.ones(len(codes), bool)
    for members, _share in found:
        keep[members] = False
    everyone = np.concatenate([members for members, _share in found])
    heads = held_out_head(np.flatnonzero(keep), everyone)
    groups, start = [], 0
    for members, share in found:
        head = heads[start:start + len(members)]
        start += len(members)
        outside = codes[outside_neighbours(nearest, members)]
        votes = np.stack([np.bincount(row, minlength=classes) for row in outside])
        votes = votes / outside.shape[1]
        held_out = (1 - neighbour_weight) * head + neighbour_weight * votes
        groups.append(LabelGroup(members, int(codes[members[0]]), share, held_out))
    return groups


def pair_excess(codes: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(excess, joint), both (classes, classes) [given, true]: cleanlab's confident joint
    (counts of each given label whose probabilities are confidently of each true class) and
    its one-directional excess (less the same pair the other way round, at least 0)."""
    from cleanlab.count import compute_confident_joint

    joint = compute_confident_joint(codes, probs).astype(float)
    excess = np.maximum(joint - joint.T, 0.0)
    np.fill_diagonal(excess, 0.0)
    return excess, joint


def pair_noise(codes: np.ndarray, excess: np.ndarray, floor: float = NOISE_FLOOR) -> np.ndarray:
    """(classes, classes) estimated P(given = column | true = row): the excess (pair_excess)
    over each class's size, plus `floor` for every pair."""
    classes = excess.shape[0]
    sizes = np.maximum(np.bincount(codes, minlength=classes), 1).astype(float)
    given_of_true = excess.T / sizes[:, None] + floor * (1 - np.eye(classes))
    np.fill_diagonal(given_of_true, 0.0)
    np.fill_diagonal(given_of_true, np.maximum(1.0 - given_of_true.sum(axis=1), floor))
    return given_of_true


def filed_pairs(excess: np.ndarray, joint: np.ndarray, codes: np.ndarray,
                posterior: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
    """Pairs of classes where one is filed as the other, as findings: [(members, given,
    true)] for every (given, true) whose excess is at least MIN_GROUP images and at least
    PAIR_SIGNIFICANCE standard deviations of the difference chance makes between two counts
    (sqrt of their sum); the members are the images filed as `given` whose posterior
    favours `true`."""
    found = []
    favoured = posterior.argmax(axis=1)
    for given, true in zip(*np.nonzero(excess), strict=True):
        noise = np.sqrt(joint[given, true] + joint[true, given])
        if excess[given, true] < max(MIN_GROUP, PAIR_SIGNIFICANCE * noise):
            continue
        members = np.flatnonzero((codes == given) & (favoured == true))
        if len(members) >= MIN_GROUP:
            found.append((members, int(given), int(true)))
    return found


def noisy_label_posterior(probs: np.ndarray, codes: np.ndarray,
                          given_of_true: np.ndarray) -> np.ndarray:
    """(n, classes) P(true = j | x, given label): probs (P(j | x)) times P(given | true = j),
    normalised per row."""
    posterior = probs * given_of_true[:, codes].T
    return posterior / np.maximum(posterior.sum(axis=1, keepdims=True), 1e-300)
