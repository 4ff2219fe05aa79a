"""Suspected mislabels: rank the labeled images by how little their label fits the rest.

Every labeled image gets probabilities from a head that never saw it (stratified k-fold),
and a ranking turns probabilities and the given labels into a suspicion score. "head_knn"
blends the out-of-fold head with the label distribution of each image's nearest neighbours
in embedding space, then scores 1 - p(given label) of the blend. The default,
"noise_aware", starts from that blend, judges groups of same-looking images filed under one
class with the whole group held out, and scores each label by the posterior that it is
right given the class-pair noise the labels show (label_groups.py): it also finds a run of
images filed under the wrong class, and one class systematically filed as another.

Chosen by bench/mislabels.py (Fashion-MNIST, 10,000 labels, 5 % flipped, 64x64 features),
average precision of the ranking against the flipped labels:

- the round's head (C=0.01), self-confidence: AP 0.80; a more strongly regularised head
  (C=0.003) memorises fewer of the wrong labels it is trained on: AP 0.85;
- blended 0.7/0.3 with the 50-neighbour label distribution: AP 0.89 (0.88 on another flip
  seed); the neighbours alone reach 0.78, normalized margin 0.70, confidence-weighted
  entropy 0.82, 10 folds instead of 5 no better, and ensembles of heads with other C worse.

Knows numpy, scikit-learn and cleanlab; nothing of the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from ..learner.head import HeadModel, Projection, side_by_side
from . import noise_aware
from .label_groups import MisfiledGroup

FOLDS = 5
# Stronger regularisation than the round's head (0.01): trained on the very labels it is
# asked to doubt, a head that fits them closely vouches for the wrong ones too.
C = 0.003
NEIGHBOURS = 50
NEIGHBOUR_WEIGHT = 0.3
DEFAULT_RANKING = "noise_aware"
BLOCK = 1024  # rows of the similarity matrix held at once in the neighbour search


@dataclass
class LabelIssues:
    """One entry per labeled image, in the order given. `rank` 0 is the most suspicious."""

    ranking: str
    classes: np.ndarray  # the label values, in the order of the probability columns
    given: np.ndarray  # the label each image has
    suggested: np.ndarray  # the label the probabilities favour
    score: np.ndarray  # higher = more suspicious; 0 for images that could not be judged
    rank: np.ndarray
    flagged: np.ndarray  # cleanlab's find_label_issues, on the same probabilities
    probs: np.ndarray = field(repr=False)  # (n, classes) out-of-fold, as scored
    unscored: int = 0  # images of a class with a single label: nothing to compare them to
    seconds: float = 0.0
    groups: list[MisfiledGroup] = field(default_factory=list)  # most wrong labels first


    def order(self) -> np.ndarray:
        """Positions of the images, most suspicious first."""
        return np.argsort(self.rank)


def _fit_head(
    x: np.ndarray, y: np.ndarray, projection: Projection, c: float, seed: int
) -> HeadModel:
    with threadpool_limits(1):  # as in the round's head: one BLAS thread is faster here
        classifier = LogisticRegression(
            C=c, max_iter=1000, class_weight="balanced", random_state=seed
        ).fit(projection(x), y)
    return HeadModel(projection, classifier)


def fold_assignment(codes: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Stratified folds by hand: each class's images, shuffled, dealt round-robin. Unlike
    StratifiedKFold it accepts classes smaller than the number of folds (a class of m < k
    images lands in m different folds, so each is still predicted from the other m - 1)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(codes), np.int64)
    start = 0
    for code in np.unique(codes):
        members = rng.permutation(np.flatnonzero(codes == code))
        # Each class starts where the last ended, so the folds stay even in size.
        fold[members] = (start + np.arange(len(members))) % folds
        start += len(members)
    return fold


def out_of_fold_probabilities(
    features: np.ndarray,
    codes: np.ndarray,
    folds: int = FOLDS,
    seed: int = 0,
    c: float = C,
    unlabeled: np.ndarray | None = None,
    left_out: np.ndarray | None = None,
) -> np.ndarray:
    """(n, classes) probabilities, each row from a head trained without that image. `codes`
    are class indices 0..k-1; a class absent from a fold's training part gets probability 0
    there. The projection needs no labels, so it is fitted once on every image. The rows
    `left_out` (a mask) train no head, and are still predicted."""
    classes = int(codes.max()) + 1
    basis = features if unlabeled is None else np.concatenate([features, unlabeled])
    projection = Projection.fit(basis, seed)
    fold = fold_assignment(codes, folds, seed)
    probs = np.zeros((len(codes), classes))

    def fold_probabilities(k: int):
        test, train = fold == k, fold != k
        if left_out is not None:
            train &= ~left_out
        if not test.any() or len(np.unique(codes[train])) < 2:
            return None
        head = _fit_head(features[train], codes[train], projection, c, seed)
        return test, head.classes_, head.predict_proba(features[test])

    for found in side_by_side(fold_probabilities, range(folds)):
        if found is not None:
            test, columns, fold_probs = found
            probs[np.ix_(test, columns)] = fold_probs
    return probs


def in_sample_probabilities(
    features: np.ndarray, codes: np.ndarray, seed: int = 0, c: float = C
) -> np.ndarray:
    """Probabilities of a head trained on every label, for those same images (Labelfix)."""
    head = _fit_head(features, codes, Projection.fit(features, seed), c, seed)
    probs = np.zeros((len(codes), int(codes.max()) + 1))
    probs[:, head.classes_] = head.predict_proba(features)
    return probs


def nearest_neighbours(features: np.ndarray, k: int = NEIGHBOURS,
                       block: int = BLOCK) -> np.ndarray:
    """(n, k) positions of each image's k nearest other images, nearest first (cosine on the
    standardised features), computed a block of rows at a time."""
    z = Projection.fit(features)(features)
    z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-12
    n = len(z)
    k = max(1, min(k, n - 1))
    nearest = np.empty((n, k), np.int64)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        similarity = z[rows] @ z.T
        similarity[np.arange(len(rows)), rows] = -np.inf  # not its own neighbour
        found = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarity, found, axis=1), axis=1,
                           kind="stable")
        nearest[rows] = np.take_along_axis(found, order, axis=1)
    return nearest


def label_distribution(nearest: np.ndarray, codes: np.ndarray, classes: int,
                       k: int | None = None, voters: np.ndarray | None = None) -> np.ndarray:
    """(n, classes) share of each class among the first k of the images `nearest` (n, >= k)
    of each image; with `voters` (a mask), among the first k of them that are voters."""
    k = nearest.shape[1] if k is None else min(k, nearest.shape[1])
    counted = np.ones(nearest.shape, bool) if voters is None else voters[nearest]
    counted &= np.cumsum(counted, axis=1) <= k
    counts = np.zeros((len(nearest), classes))
    np.add.at(counts, (np.repeat(np.arange(len(nearest)), nearest.shape[1]),
                       codes[nearest].ravel()), counted.ravel().astype(float))
    return counts / np.maximum(counted.sum(axis=1, keepdims=True), 1)


def neighbour_label_distribution(
    features: np.ndarray, codes: np.ndarray, k: int = NEIGHBOURS, block: int = BLOCK
) -> np.ndarray:
    """(n, classes) share of each class among an image's k nearest other images."""
    return label_distribution(nearest_neighbours(features, k, block), codes,
                              int(codes.max()) + 1)


@dataclass
class Evidence:
    """What a ranking may draw on, computed only when it asks: rankings that need no
    out-of-fold head (labelfix, knn) do not pay for one."""

    features: np.ndarray
    codes: np.ndarray  # class indices 0..k-1
    folds: int = FOLDS
    seed: int = 0
    c: float = C
    neighbours: int = NEIGHBOURS
    unlabeled: np.ndarray | None = None
    probs: np.ndarray | None = None
    neighbour_weight: float = NEIGHBOUR_WEIGHT
    groups: list = field(default_factory=list)  # label_groups.LabelGroup, where looked for
    pairs: list = field(default_factory=list)  # label_groups.filed_pairs, where looked for
    _nearest: np.ndarray | None = None

    def nearest(self, k: int) -> np.ndarray:
        """(n, >= k) each image's nearest others, nearest first (searched once)."""
        if self._nearest is None or self._nearest.shape[1] < min(k, len(self.codes) - 1):
            self._nearest = nearest_neighbours(self.features, k)
        return self._nearest

    def held_out_head(self, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        """(len(test), classes) probabilities from a head trained on the rows `train` only."""
        classes = int(self.codes.max()) + 1
        basis = self.features if self.unlabeled is None else np.concatenate(
            [self.features, self.unlabeled])
        head = _fit_head(self.features[train], self.codes[train],
                         Projection.fit(basis, self.seed), self.c, self.seed)
        probs = np.zeros((len(test), classes))
        probs[:, head.classes_] = head.predict_proba(self.features[test])
        return probs

    def out_of_fold(self) -> np.ndarray:
        if self.probs is None:
            self.probs = _normalise(
                out_of_fold_probabilities(
                    self.features,
                    self.codes,
                    min(self.folds, len(self.codes)),
                    self.seed,
                    self.c,
                    self.unlabeled,
                )
            )
        return self.probs

    def given(self, probs: np.ndarray) -> np.ndarray:
        return probs[np.arange(len(self.codes)), self.codes]


# A ranking: evidence -> (score, higher = more suspicious; the probabilities it scored).
Ranking = Callable[[Evidence], tuple[np.ndarray, np.ndarray]]
RANKINGS: dict[str, Ranking] = {}


def register(name: str) -> Callable[[Ranking], Ranking]:
    def decorate(function: Ranking) -> Ranking:
        RANKINGS[name] = function
        return function

    return decorate


def _cleanlab_score(method: str) -> Ranking:
    def score(evidence: Evidence):
        from cleanlab.rank import get_label_quality_scores

        probs = evidence.out_of_fold()
        return 1.0 - get_label_quality_scores(evidence.codes, probs, method=method), probs

    return score


register("self_confidence")(_cleanlab_score("self_confidence"))
register("normalized_margin")(_cleanlab_score("normalized_margin"))
register("confidence_weighted_entropy")(_cleanlab_score("confidence_weighted_entropy"))


@register("labelfix")
def _labelfix(evidence: Evidence):
    """Müller & Markert's Labelfix: the inner product of the one-hot label with the
    probabilities of a model trained on all the labels, these images included."""
    probs = in_sample_probabilities(evidence.features, evidence.codes, evidence.seed, evidence.c)
    return 1.0 - evidence.given(probs), probs


@register("knn")
def _knn(evidence: Evidence):
    probs = neighbour_label_distribution(evidence.features, evidence.codes, evidence.neighbours)
    return 1.0 - evidence.given(probs), probs


@register("head_knn")
def _head_knn(evidence: Evidence):
    blend = _blend(evidence)
    return 1.0 - evidence.given(blend), blend


@register("noise_aware")
def _noise_aware(evidence: Evidence):
    """See noise_aware.py: head_knn's blend, twice (the second time without the labels the
    first suspects), groups judged held out together, scored against the class-pair noise."""
    return noise_aware.rank(evidence, lambda left_out: _blend(evidence, left_out))


def _blend(evidence: Evidence, left_out: np.ndarray | None = None) -> np.ndarray:
    """head_knn's blend; the rows `left_out` (a mask) neither train the heads nor vote."""
    classes = int(evidence.codes.max()) + 1
    if left_out is None:
        oof = evidence.out_of_fold()
    else:
        oof = _normalise(out_of_fold_probabilities(
            evidence.features, evidence.codes, min(evidence.folds, len(evidence.codes)),
            evidence.seed, evidence.c, evidence.unlabeled, left_out))
    neighbours = label_distribution(evidence.nearest(evidence.neighbours), evidence.codes,
                                    classes, evidence.neighbours,
                                    None if left_out is None else ~left_out)
    return _normalise((1 - NEIGHBOUR_WEIGHT) * oof + NEIGHBOUR_WEIGHT * neighbours)


def get_ranking(name: str) -> Ranking:
    if name not in RANKINGS:
        raise KeyError(f"unknown ranking {name!r}; known: {', '.join(sorted(RANKINGS))}")
    return RANKINGS[name]


def find_mislabels(
    features: np.ndarray,
    labels: np.ndarray,
    ranking: str = DEFAULT_RANKING,
    folds: int = FOLDS,
    seed: int = 0,
    c: float = C,
    neighbours: int = NEIGHBOURS,
    unlabeled: np.ndarray | None = None,
    probs: np.ndarray | None = None,
) -> LabelIssues:
    """Rank labeled images by suspicion. `features` (n, d) embeddings, `labels` (n,) any
    label values; `unlabeled` embeddings only shape the label-free projection. `probs`:
    out-of-fold probabilities already computed (columns in sorted label order), to compare
    rankings without refitting. Images of a class with a single label are not judged
    (score 0, never flagged): there is nothing to compare them with."""
    from cleanlab.filter import find_label_issues

    started = time.perf_counter()
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    if len(labels) != len(features):
        raise ValueError(f"{len(labels)} labels for {len(features)} feature rows")
    score_ranking = get_ranking(ranking)
    all_classes, counts = np.unique(labels, return_counts=True)
    classes = all_classes[counts >= 2]
    judged = np.isin(labels, classes)
    n = len(labels)
    score = np.zeros(n)
    flagged = np.zeros(n, bool)
    suggested = labels.copy()
    scored_probs = np.zeros((n, len(classes)))
    groups: list[MisfiledGroup] = []
    if len(classes) >= 2:
        codes = np.searchsorted(classes, labels[judged])
        given_probs = None
        if probs is not None:
            given_probs = np.asarray(probs, dtype=np.float64)[judged]
            given_probs = _normalise(given_probs[:, np.isin(all_classes, classes)])
        evidence = Evidence(
            features[judged], codes, folds, seed, c, neighbours, unlabeled, given_probs
        )
        judged_score, judged_probs = score_ranking(evidence)
        judged_probs = _normalise(judged_probs)
        score[judged] = judged_score
        scored_probs[judged] = judged_probs
        suggested[judged] = classes[judged_probs.argmax(axis=1)]
        # n_jobs=1: by default cleanlab forks a multiprocessing pool, and a fork of a process
        # that runs threads (the worker's, torch's) can hang for ever on a lock it inherited.
        flagged[judged] = find_label_issues(codes, judged_probs, n_jobs=1)
        positions = np.flatnonzero(judged)
        for kind, members, given, looks_like in noise_aware.findings(evidence):
            members = positions[members]
            members = members[np.argsort(-score[members], kind="stable")]
            groups.append(MisfiledGroup(members, classes[given], classes[looks_like],
                                        float(score[members].mean()), kind))
        # The finding with the most wrong labels to expect first: sum of its suspicion.
        groups.sort(key=lambda g: -g.score * len(g.positions))
    rank = np.empty(n, np.int64)
    # A stable sort: ties (the unjudged zeros among them) keep the given order.
    rank[np.argsort(-score, kind="stable")] = np.arange(n)
    return LabelIssues(
        ranking=ranking,
        classes=classes,
        given=labels,
        suggested=suggested,
        score=score,
        rank=rank,
        flagged=flagged,
        probs=scored_probs,
        unscored=int((~judged).sum()),
        seconds=time.perf_counter() - started,
        groups=groups,
    )


def _normalise(probs: np.ndarray) -> np.ndarray:
    """Rows summing to one, and no exact zero: cleanlab takes logarithms of them."""
    probs = np.clip(probs, 1e-6, None)
    return probs / probs.sum(axis=1, keepdims=True)
