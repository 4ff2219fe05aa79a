"""How much annotators agree, beyond chance and with the consensus: Cohen's kappa per pair,
Fleiss' kappa, Krippendorff's alpha, between-annotator confusion and agreement with the
consensus label, for the admin's agreement page. Pure numbers, like agreement.py, whose
`(item, annotator, label)` votes and `IndexedVotes` these functions take."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import krippendorff
import numpy as np
from sklearn.metrics import cohen_kappa_score

from .annotator_model import IndexedVotes, Vote, index_votes

KAPPA_UNDEFINED = (
    "both gave the same single label on every shared item: chance agreement is 1, kappa is 0/0"
)


@dataclass(frozen=True)
class PairKappa:
    kappa: float | None
    shared_items: int
    undefined_because: str | None = None


def cohen_kappa_pairs(
    votes: Iterable[Vote] | IndexedVotes,
) -> dict[tuple[Hashable, Hashable], PairKappa]:
    """Cohen's kappa for every annotator pair (first-seen annotator first) with at least two
    shared items. Kappa is 0/0 when both gave one and the same label on every shared item
    (chance agreement is 1): that pair gets kappa None and the reason."""
    indexed = index_votes(votes)
    by_annotator = _votes_by_annotator(indexed)
    pairs: dict[tuple[Hashable, Hashable], PairKappa] = {}
    for a in range(len(indexed.annotators)):
        for b in range(a + 1, len(indexed.annotators)):
            labels_a, labels_b = _shared_labels(by_annotator[a], by_annotator[b])
            if len(labels_a) < 2:
                continue
            key = (indexed.annotators[a], indexed.annotators[b])
            if len(np.union1d(labels_a, labels_b)) == 1:
                pairs[key] = PairKappa(None, len(labels_a), KAPPA_UNDEFINED)
            else:
                pairs[key] = PairKappa(float(cohen_kappa_score(labels_a, labels_b)), len(labels_a))
    return pairs


def _votes_by_annotator(indexed: IndexedVotes) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per annotator index: (item indices sorted, their labels)."""
    order = np.lexsort((indexed.item, indexed.annotator))
    bounds = np.searchsorted(indexed.annotator[order], np.arange(len(indexed.annotators) + 1))
    return [
        (indexed.item[order[start:end]], indexed.label[order[start:end]])
        for start, end in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def _shared_labels(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]):
    _, in_a, in_b = np.intersect1d(a[0], b[0], assume_unique=True, return_indices=True)
    return a[1][in_a], b[1][in_b]


@dataclass(frozen=True)
class FleissKappa:
    kappa: float | None  # None when undefined: no usable items, or everyone used one class
    raters_per_item: int | None
    items_used: int


def fleiss_kappa(votes: Iterable[Vote] | IndexedVotes, n_classes: int) -> FleissKappa:
    """Fleiss' kappa. It needs the same number of raters m on every item, so only items with
    exactly m votes are used, m being the most common vote count of at least 2 (on a tie, the
    larger m); items with another count are left out and `items_used` says how many counted."""
    counts = index_votes(votes, n_classes).label_counts()
    per_item = counts.sum(axis=1)
    frequency = np.bincount(per_item)
    frequency[:2] = 0
    if frequency.sum() == 0:
        return FleissKappa(None, None, 0)
    m = int(len(frequency) - 1 - frequency[::-1].argmax())  # largest among the most common
    table = counts[per_item == m].astype(float)
    observed = ((table**2).sum(axis=1) - m) / (m * (m - 1))
    shares = table.sum(axis=0) / table.sum()
    chance = float((shares**2).sum())
    if np.isclose(chance, 1.0):
        return FleissKappa(None, m, len(table))
    return FleissKappa(float((observed.mean() - chance) / (1 - chance)), m, len(table))


def krippendorff_alpha(votes: Iterable[Vote] | IndexedVotes, n_classes: int) -> float | None:
    """Nominal Krippendorff's alpha over items with at least two votes (any number of them).
    None when undefined: no such item, or a single class used on all of them."""
    counts = index_votes(votes, n_classes).label_counts()
    pairable = counts[counts.sum(axis=1) >= 2]
    if len(pairable) == 0 or np.count_nonzero(pairable.sum(axis=0)) < 2:
        return None
    return float(krippendorff.alpha(value_counts=pairable, level_of_measurement="nominal"))


def confusion_between(
    votes: Iterable[Vote] | IndexedVotes, a: Hashable, b: Hashable, n_classes: int
) -> np.ndarray:
    """K x K counts over the items both labeled: rows a's label, columns b's label."""
    indexed = index_votes(votes, n_classes)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    if a not in indexed.annotators or b not in indexed.annotators:
        return matrix
    by_annotator = _votes_by_annotator(indexed)
    labels_a, labels_b = _shared_labels(
        by_annotator[indexed.annotators.index(a)], by_annotator[indexed.annotators.index(b)]
    )
    np.add.at(matrix, (labels_a, labels_b), 1)
    return matrix


def pairwise_confusion(votes: Iterable[Vote] | IndexedVotes, n_classes: int) -> np.ndarray:
    """`confusion_between` summed over all ordered pairs of different annotators (symmetric).
    On an item with counts c, the ordered pairs of votes from different annotators are
    c c^T less the diagonal c (a vote paired with itself)."""
    counts = index_votes(votes, n_classes).label_counts()
    return counts.T @ counts - np.diag(counts.sum(axis=0))


@dataclass(frozen=True)
class ConsensusAgreement:
    share: float | None  # None when none of the annotator's items has a consensus
    votes_compared: int


def agreement_with_consensus(
    votes: Iterable[Vote] | IndexedVotes, consensus: Mapping[Hashable, int | None]
) -> dict[Hashable, ConsensusAgreement]:
    """Per annotator: the share of their votes equal to the item's consensus label, over the
    items that have one (not None). The annotator's own vote is part of that consensus, which
    flatters everyone on items with few votes; compare annotators on similar items."""
    indexed = index_votes(votes)
    target = np.array(
        [-1 if consensus.get(item) is None else consensus[item] for item in indexed.items],
        dtype=np.int64,
    )
    vote_target = target[indexed.item]
    compared = vote_target >= 0
    n_annotators = len(indexed.annotators)
    totals = np.bincount(indexed.annotator, weights=compared, minlength=n_annotators)
    agreed = np.bincount(
        indexed.annotator, weights=compared & (indexed.label == vote_target), minlength=n_annotators
    )
    return {
        who: ConsensusAgreement(float(agreed[a] / totals[a]) if totals[a] else None, int(totals[a]))
        for a, who in enumerate(indexed.annotators)
    }
