"""Agreement between annotators and how much to trust each of them. Pure numbers: no Flask,
no SQL, no torch.

Every function takes votes as `(item, annotator, label)` triples: item and annotator are any
hashable ids, label is a class index 0..K-1. An annotator has one vote per item: when a pair
appears more than once, the last vote counts (the server appends corrections). Functions that
are called several times on the same votes also accept the `IndexedVotes` from `index_votes`.

- `majority`: plain vote, None on a tie.
- `dawid_skene`: Dawid & Skene (1979) EM: a K x K confusion matrix per annotator, the class
  priors and a posterior per item; `weighted_label` scores one item's votes with the fitted
  matrices, as each vote arrives.
- `weights_trustworthy`: whether the annotators overlap enough for those weights to mean anything.
Chance-corrected agreement and confusion between annotators, for the admin page, are in
agreement_measures.py.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse

Vote = tuple[Hashable, Hashable, int]

# Each annotator must share this many items with someone else before per-annotator weights are
# trusted. An accuracy measured on n items has a standard error of sqrt(p(1-p)/n): 0.09 at n=20
# and p=0.8, enough to tell a 0.95 annotator from a 0.70 one (~3 standard errors) but no finer;
# with fewer items the weights mostly echo noise and a plain majority is the honest answer.
MIN_SHARED_ITEMS = 20

# Strength, in pseudo-votes per row, of the Dirichlet prior that pulls each annotator's confusion
# rows toward the pooled confusion of all annotators. An annotator with a handful of votes then
# looks like the average annotator instead of a perfect or a useless one; at ~100 votes a row,
# 2 pseudo-votes move an accuracy by about 1 %.
DEFAULT_SMOOTHING = 2.0


@dataclass(frozen=True)
class IndexedVotes:
    """Votes as dense index arrays: `item[v]`, `annotator[v]`, `label[v]` for vote v."""

    items: list[Hashable]  # index -> item id, in order of first appearance
    annotators: list[Hashable]  # index -> annotator id
    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    n_classes: int

    def label_counts(self) -> np.ndarray:
        """(items, K) matrix: how many votes each item got for each class."""
        flat = np.bincount(
            self.item * self.n_classes + self.label, minlength=len(self.items) * self.n_classes
        )
        return flat.reshape(len(self.items), self.n_classes)

    def votes_per_item(self) -> np.ndarray:
        return np.bincount(self.item, minlength=len(self.items))


def index_votes(votes: Iterable[Vote] | IndexedVotes, n_classes: int | None = None) -> IndexedVotes:
    """Dense index arrays for `votes`; K is `n_classes`, or the largest label + 1 when None."""
    if isinstance(votes, IndexedVotes):
        if n_classes is not None and n_classes < votes.n_classes:
            raise ValueError(
                f"n_classes={n_classes} but the votes were indexed with {votes.n_classes} classes"
            )
        if n_classes is None or n_classes == votes.n_classes:
            return votes
        return IndexedVotes(
            votes.items, votes.annotators, votes.item, votes.annotator, votes.label, n_classes
        )
    latest: dict[tuple[Hashable, Hashable], int] = {}
    for item, annotator, label in votes:
        latest[(item, annotator)] = label
    item_index: dict[Hashable, int] = {}
    annotator_index: dict[Hashable, int] = {}
    items = [item_index.setdefault(item, len(item_index)) for item, _ in latest]
    annotators = [annotator_index.setdefault(who, len(annotator_index)) for _, who in latest]
    labels = np.fromiter(latest.values(), dtype=np.int64, count=len(latest))
    if n_classes is None:
        n_classes = int(labels.max()) + 1 if len(labels) else 0
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must be class indices 0..{n_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    return IndexedVotes(
        list(item_index),
        list(annotator_index),
        np.array(items, dtype=np.int64),
        np.array(annotators, dtype=np.int64),
        labels,
        n_classes,
    )


@dataclass(frozen=True)
class MajorityLabel:
    label: int | None  # None when two or more classes share the most votes
    agreement: float  # votes for the most voted class / votes on the item
    votes: int


def majority(votes: Iterable[Vote] | IndexedVotes, n_classes: int) -> dict[Hashable, MajorityLabel]:
    indexed = index_votes(votes, n_classes)
    counts = indexed.label_counts()
    top = counts.max(axis=1, initial=0)
    tied = (counts == top[:, None]).sum(axis=1) > 1
    winners = counts.argmax(axis=1)
    totals = counts.sum(axis=1)
    return {
        item: MajorityLabel(
            None if tied[i] else int(winners[i]), float(top[i] / totals[i]), int(totals[i])
        )
        for i, item in enumerate(indexed.items)
    }


@dataclass
class DawidSkeneResult:
    """A fitted Dawid-Skene model. Arrays follow `items` and `annotators` order."""

    n_classes: int
    items: list[Hashable]
    annotators: list[Hashable]
    posteriors: np.ndarray  # (items, K): P(true class | all votes)
    confusions: np.ndarray  # (annotators, K, K): P(annotator says l | true class k) at [k, l]
    accuracies: np.ndarray  # (annotators,): expected share of the annotator's votes that are right
    priors: np.ndarray  # (K,): class frequencies
    iterations: int
    converged: bool

    @property
    def labels(self) -> np.ndarray:
        return self.posteriors.argmax(axis=1)

    def labels_by_item(self) -> dict[Hashable, int]:
        return dict(zip(self.items, self.labels.tolist(), strict=True))

    def accuracy_by_annotator(self) -> dict[Hashable, float]:
        return dict(zip(self.annotators, self.accuracies.tolist(), strict=True))

    def confusion_by_annotator(self) -> dict[Hashable, np.ndarray]:
        """What `weighted_label` takes."""
        return dict(zip(self.annotators, self.confusions, strict=True))

    def to_dict(self, include_items: bool = True) -> dict[str, Any]:
        """JSON-able (ids must be str or int to round-trip). `include_items=False` keeps only
        what `weighted_label` needs: annotators, confusions, accuracies, priors."""
        data: dict[str, Any] = {
            "n_classes": self.n_classes,
            "annotators": list(self.annotators),
            "confusions": self.confusions.tolist(),
            "accuracies": self.accuracies.tolist(),
            "priors": self.priors.tolist(),
            "iterations": self.iterations,
            "converged": self.converged,
        }
        if include_items:
            data["items"] = list(self.items)
            data["posteriors"] = self.posteriors.tolist()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DawidSkeneResult:
        k = data["n_classes"]
        return cls(
            n_classes=k,
            items=list(data.get("items", [])),
            annotators=list(data["annotators"]),
            posteriors=np.array(data.get("posteriors", []), dtype=float).reshape(-1, k),
            confusions=np.array(data["confusions"], dtype=float).reshape(-1, k, k),
            accuracies=np.array(data["accuracies"], dtype=float),
            priors=np.array(data["priors"], dtype=float),
            iterations=data["iterations"],
            converged=data["converged"],
        )


def dawid_skene(
    votes: Iterable[Vote] | IndexedVotes,
    n_classes: int,
    gold: Mapping[Hashable, int] | None = None,
    max_iter: int = 50,
    tol: float = 1e-6,
    smoothing: float = DEFAULT_SMOOTHING,
) -> DawidSkeneResult:
    """Fit per-annotator confusion matrices and per-item posteriors by EM.

    Starts from the soft majority (each item's vote shares). `gold` maps items to their known
    class: their posteriors are clamped to it in every E-step, so an annotator is judged on
    gold by the truth, not by the crowd. Stops when the log-likelihood of the votes changes
    by less than `tol` relatively (`converged`), or after `max_iter` iterations.
    Each iteration is two sparse products over the votes, O(votes x K).
    """
    indexed = index_votes(votes, n_classes)
    k, n_items, n_annotators = n_classes, len(indexed.items), len(indexed.annotators)
    # One column per (annotator, label): the E-step adds log P(label | class) per vote.
    cells = indexed.annotator * k + indexed.label
    votes_by_cell = sparse.csr_array(
        (np.ones(len(cells)), (indexed.item, cells)), shape=(n_items, n_annotators * k)
    )
    counts = indexed.label_counts().astype(float)
    posteriors = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    gold_rows, gold_labels = _gold_rows(indexed, gold or {}, k)
    posteriors[gold_rows] = np.eye(k)[gold_labels]

    confusions = np.full((n_annotators, k, k), 1.0 / max(k, 1))
    priors = np.full(k, 1.0 / max(k, 1))
    iterations, converged, previous = 0, n_items == 0, -np.inf
    while not converged and iterations < max_iter:
        iterations += 1
        # M-step: soft counts [a, true k, said l], smoothed toward the pooled confusion.
        soft = (votes_by_cell.T @ posteriors).reshape(n_annotators, k, k).transpose(0, 2, 1)
        # Pooled pseudo-counts: one per cell, so no probability is ever zero, and K-1 more on
        # the diagonal, so a class nobody voted for reads as "annotators are right half the
        # time", not "annotators answer at random", which would soak up every disagreement.
        pooled = soft.sum(axis=0) + 1.0 + (k - 1) * np.eye(k)
        pooled /= pooled.sum(axis=1, keepdims=True)
        confusions = (soft + smoothing * pooled) / (soft.sum(axis=2, keepdims=True) + smoothing)
        priors = (posteriors.sum(axis=0) + 1.0) / (n_items + k)
        # E-step: log P(k) + sum over the item's votes of log P(label | k), then normalise.
        log_by_cell = np.log(confusions).transpose(0, 2, 1).reshape(n_annotators * k, k)
        log_post = np.log(priors) + votes_by_cell @ log_by_cell
        row_max = log_post.max(axis=1, keepdims=True)
        posteriors = np.exp(log_post - row_max)
        row_sum = posteriors.sum(axis=1, keepdims=True)
        posteriors /= row_sum
        posteriors[gold_rows] = np.eye(k)[gold_labels]
        # log P(votes | model): stop when it changes by less than tol, relatively.
        log_likelihood = float((row_max + np.log(row_sum)).sum())
        converged = abs(log_likelihood - previous) <= tol * abs(log_likelihood)
        previous = log_likelihood

    right = np.bincount(
        indexed.annotator, weights=posteriors[indexed.item, indexed.label], minlength=n_annotators
    )
    accuracies = right / np.maximum(np.bincount(indexed.annotator, minlength=n_annotators), 1)
    return DawidSkeneResult(
        k,
        indexed.items,
        indexed.annotators,
        posteriors,
        confusions,
        accuracies,
        priors,
        iterations,
        converged,
    )


def _gold_rows(indexed: IndexedVotes, gold: Mapping[Hashable, int], k: int):
    """Row indices and classes of the gold items that have votes (others carry no signal)."""
    position = {item: i for i, item in enumerate(indexed.items)}
    pairs = [(position[item], label) for item, label in gold.items() if item in position]
    rows = np.array([row for row, _ in pairs], dtype=np.int64)
    labels = np.array([label for _, label in pairs], dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"gold labels must be class indices 0..{k - 1}")
    return rows, labels


def weighted_label(
    annotator_confusions: Mapping[Hashable, Any],
    priors: Any,
    item_votes: Iterable[tuple[Hashable, int]],
    unknown: Literal["mean", "ignore"] = "mean",
) -> np.ndarray:
    """Posterior over classes for one item from its `(annotator, label)` votes, with matrices
    fitted by `dawid_skene` (numpy arrays or nested lists). An annotator without a matrix
    counts as the mean of the known ones (`unknown="mean"`) or not at all (`"ignore"`); with
    no known annotator at all the mean is uniform, i.e. uninformative. Argmax is the label."""
    log_post = np.log(np.asarray(priors, dtype=float))
    latest = dict(item_votes)  # one vote per annotator, the last one
    mean_confusion = None
    for annotator, label in latest.items():
        confusion = annotator_confusions.get(annotator)
        if confusion is None:
            if unknown == "ignore":
                continue
            if mean_confusion is None:
                mean_confusion = _mean_confusion(annotator_confusions, len(log_post))
            confusion = mean_confusion
        log_post += np.log(np.asarray(confusion, dtype=float)[:, label])
    posterior = np.exp(log_post - log_post.max())
    return posterior / posterior.sum()


def _mean_confusion(annotator_confusions: Mapping[Hashable, Any], k: int) -> np.ndarray:
    if not annotator_confusions:
        return np.full((k, k), 1.0 / k)
    return np.mean([np.asarray(c, dtype=float) for c in annotator_confusions.values()], axis=0)


def shared_item_counts(votes: Iterable[Vote] | IndexedVotes) -> dict[Hashable, int]:
    """Per annotator: how many of the items they labeled someone else labeled too."""
    indexed = index_votes(votes)
    shared = indexed.votes_per_item()[indexed.item] >= 2
    counts = np.bincount(indexed.annotator, weights=shared, minlength=len(indexed.annotators))
    return dict(zip(indexed.annotators, counts.astype(int).tolist(), strict=True))


def weights_trustworthy(
    votes: Iterable[Vote] | IndexedVotes, min_shared_items: int = MIN_SHARED_ITEMS
) -> bool:
    """True when there are at least two annotators and every one of them shares at least
    `min_shared_items` items with others; until then use `majority`."""
    counts = shared_item_counts(votes)
    return len(counts) >= 2 and min(counts.values()) >= min_shared_items
