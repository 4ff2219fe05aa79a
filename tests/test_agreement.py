"""Agreement and annotator-quality math, on scikit-learn's digits labels (10 classes) as the
truth with simulated annotators of known accuracy. Reference values come from sklearn,
statsmodels, krippendorff and cleanlab, computed here from the simulated arrays."""

from __future__ import annotations

import json
import time

import krippendorff
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import cohen_kappa_score, confusion_matrix
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

from server.consensus import annotator_model as agreement
from server.consensus import measures as agreement_measures
from server.consensus.annotator_model import (
    MIN_SHARED_ITEMS,
    DawidSkeneResult,
    dawid_skene,
    index_votes,
    majority,
    shared_item_counts,
    weighted_label,
    weights_trustworthy,
)
from server.consensus.measures import (
    agreement_with_consensus,
    cohen_kappa_pairs,
    confusion_between,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_confusion,
)

K = 10
ACCURACIES = {"expert": 0.95, "good": 0.85, "fair": 0.70, "spammer": 0.10}
TRUTH = load_digits().target
NO_VOTE = -1


def simulate(
    accuracies: dict[str, float], seed: int, coverage: float = 1.0, truth: np.ndarray = TRUTH
) -> np.ndarray:
    """(annotators, items) labels, NO_VOTE where an annotator skipped the item. Right with the
    annotator's probability, otherwise any other class uniformly (at 0.1 with 10 classes that
    is a uniform guess: a spammer). Each annotator labels a `coverage` share of the items;
    an item nobody took goes to the first annotator so every item has a vote."""
    rng = np.random.default_rng(seed)
    labels = np.full((len(accuracies), len(truth)), NO_VOTE)
    for row, accuracy in enumerate(accuracies.values()):
        right = rng.random(len(truth)) < accuracy
        said = np.where(right, truth, (truth + rng.integers(1, K, len(truth))) % K)
        taken = rng.random(len(truth)) < coverage
        labels[row, taken] = said[taken]
    orphans = (labels == NO_VOTE).all(axis=0)
    labels[0, orphans] = np.where(
        rng.random(orphans.sum()) < list(accuracies.values())[0],
        truth[orphans],
        (truth[orphans] + 1) % K,
    )
    return labels


def as_votes(labels: np.ndarray, names) -> list[tuple[int, str, int]]:
    return [
        (int(item), name, int(labels[row, item]))
        for row, name in enumerate(names)
        for item in np.flatnonzero(labels[row] != NO_VOTE)
    ]


def realized_accuracy(labels: np.ndarray, truth: np.ndarray = TRUTH) -> np.ndarray:
    voted = labels != NO_VOTE
    return ((labels == truth) & voted).sum(axis=1) / voted.sum(axis=1)


def majority_random_ties(labels: np.ndarray, seed: int) -> np.ndarray:
    """Plain majority with ties broken at random: the baseline a weighted vote has to beat."""
    rng = np.random.default_rng(seed)
    counts = np.stack([(labels == c).sum(axis=0) for c in range(K)], axis=1)
    top = counts == counts.max(axis=1, keepdims=True)
    return np.array([rng.choice(np.flatnonzero(row)) for row in top])


def ds_labels_in_item_order(result: DawidSkeneResult, n_items: int) -> np.ndarray:
    by_item = result.labels_by_item()
    return np.array([by_item[item] for item in range(n_items)])


# --- Dawid-Skene ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dawid_skene_recovers_annotator_accuracy_and_order(seed):
    labels = simulate(ACCURACIES, seed)
    result = dawid_skene(as_votes(labels, ACCURACIES), K)
    estimated = np.array([result.accuracy_by_annotator()[name] for name in ACCURACIES])
    # Compared with the accuracy each annotator really had on these 1,797 items, which takes
    # the sampling noise out. 0.03 is ~3 binomial standard errors of a 0.7 accuracy measured
    # on 1,797 items (sqrt(0.21 / 1797) = 0.011): DS has to know an annotator as well as
    # someone who counted their errors against the truth on a fresh sample of the same size.
    assert np.abs(estimated - realized_accuracy(labels)).max() < 0.03
    assert list(np.argsort(-estimated)) == [0, 1, 2, 3]
    assert result.converged and result.iterations <= 50


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dawid_skene_label_beats_majority(seed):
    labels = simulate(ACCURACIES, seed)
    result = dawid_skene(as_votes(labels, ACCURACIES), K)
    ds_accuracy = (ds_labels_in_item_order(result, len(TRUTH)) == TRUTH).mean()
    majority_accuracy = (majority_random_ties(labels, seed) == TRUTH).mean()
    assert ds_accuracy > majority_accuracy


def test_gold_clamping_exposes_an_annotator_who_is_wrong_on_gold():
    # Each item gets one vote, from a careful (0.9) or a careless (0.3) annotator: nothing
    # overlaps, so without gold both look alike. Gold on 30 % of the items shows the truth.
    rng = np.random.default_rng(7)
    careful = rng.random(len(TRUTH)) < 0.5
    right = rng.random(len(TRUTH)) < np.where(careful, 0.9, 0.3)
    said = np.where(right, TRUTH, (TRUTH + rng.integers(1, K, len(TRUTH))) % K)
    votes = [
        (item, "careful" if careful[item] else "careless", int(said[item]))
        for item in range(len(TRUTH))
    ]
    gold_items = np.flatnonzero(rng.random(len(TRUTH)) < 0.3)
    gold = {int(item): int(TRUTH[item]) for item in gold_items}

    blind = dawid_skene(votes, K).accuracy_by_annotator()
    assert blind["careless"] > 0.85 and blind["careful"] > 0.85

    result = dawid_skene(votes, K, gold=gold)
    informed = result.accuracy_by_annotator()
    careless_gold = gold_items[~careful[gold_items]]
    true_careless = (said[~careful] == TRUTH[~careful]).mean()
    # The estimate rests on the careless annotator's gold items: allow 3 standard errors of
    # an accuracy measured on that many items.
    allowed = 3 * np.sqrt(true_careless * (1 - true_careless) / len(careless_gold))
    assert abs(informed["careless"] - true_careless) < allowed
    assert informed["careful"] > informed["careless"] + 0.4
    # Gold posteriors are the known answer, exactly.
    position = {item: i for i, item in enumerate(result.items)}
    for item, label in list(gold.items())[:50]:
        assert result.posteriors[position[item]].tolist() == np.eye(K)[label].tolist()


def test_weighted_label_reproduces_the_fitted_posterior_after_json_round_trip():
    labels = simulate(ACCURACIES, 3, coverage=0.7)
    votes = as_votes(labels, ACCURACIES)
    result = dawid_skene(votes, K)
    stored = DawidSkeneResult.from_dict(json.loads(json.dumps(result.to_dict(False))))
    assert stored.items == [] and stored.posteriors.shape == (0, K)
    confusions = stored.confusion_by_annotator()
    position = {item: i for i, item in enumerate(result.items)}
    for item in range(0, len(TRUTH), 97):
        item_votes = [
            (name, int(labels[row, item]))
            for row, name in enumerate(ACCURACIES)
            if labels[row, item] != NO_VOTE
        ]
        posterior = weighted_label(confusions, stored.priors, item_votes)
        np.testing.assert_allclose(posterior, result.posteriors[position[item]], atol=1e-9)
    full = DawidSkeneResult.from_dict(json.loads(json.dumps(result.to_dict())))
    np.testing.assert_allclose(full.posteriors, result.posteriors)
    assert full.items == result.items and full.annotators == result.annotators


def test_weighted_label_unknown_annotators():
    result = dawid_skene(as_votes(simulate(ACCURACIES, 4), ACCURACIES), K)
    confusions = result.confusion_by_annotator()
    known = [("expert", 3)]
    with_newcomer = known + [("newcomer", 5)]
    np.testing.assert_allclose(
        weighted_label(confusions, result.priors, with_newcomer, "ignore"),
        weighted_label(confusions, result.priors, known),
    )
    mean = np.mean(list(confusions.values()), axis=0)
    expected = result.priors * confusions["expert"][:, 3] * mean[:, 5]
    np.testing.assert_allclose(
        weighted_label(confusions, result.priors, with_newcomer), expected / expected.sum()
    )
    # Nobody known: the votes say nothing, the posterior is the prior.
    np.testing.assert_allclose(
        weighted_label({}, result.priors, [("x", 1), ("y", 1)]), result.priors / result.priors.sum()
    )


def test_dawid_skene_handles_100k_votes_quickly():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, K, 25_000)
    labels = simulate(ACCURACIES, 5, truth=truth)
    indexed = index_votes(as_votes(labels, ACCURACIES), K)
    assert len(indexed.label) == 100_000
    started = time.perf_counter()
    result = dawid_skene(indexed, K)
    elapsed = time.perf_counter() - started
    # ~0.2 s on a laptop-class CPU; a Python loop over the votes in each iteration would take
    # several seconds, which this bound catches with room for a slow CI machine.
    assert elapsed < 2.0, elapsed
    assert (ds_labels_in_item_order(result, len(truth)) == truth).mean() > 0.9


# --- trust in weights -------------------------------------------------------------------------


def test_weights_trustworthy_needs_every_annotator_to_overlap():
    labels = simulate(ACCURACIES, 6)
    votes = as_votes(labels, ACCURACIES)
    assert weights_trustworthy(votes)
    # A newcomer who shares fewer than MIN_SHARED_ITEMS items makes the weights untrustworthy.
    newcomer = [(item, "newcomer", 0) for item in range(MIN_SHARED_ITEMS - 1)]
    assert shared_item_counts(votes + newcomer)["newcomer"] == MIN_SHARED_ITEMS - 1
    assert not weights_trustworthy(votes + newcomer)
    assert weights_trustworthy(votes + newcomer + [(MIN_SHARED_ITEMS, "newcomer", 0)])
    assert not weights_trustworthy([(item, "alone", 1) for item in range(100)])
    assert not weights_trustworthy([])


# --- chance-corrected agreement ---------------------------------------------------------------


def test_cohen_kappa_pairs_equal_sklearn_on_shared_items():
    labels = simulate(ACCURACIES, 8, coverage=0.6)
    names = list(ACCURACIES)
    pairs = cohen_kappa_pairs(as_votes(labels, names))
    assert len(pairs) == 6
    for (a, b), pair in pairs.items():
        row_a, row_b = names.index(a), names.index(b)
        both = (labels[row_a] != NO_VOTE) & (labels[row_b] != NO_VOTE)
        assert pair.shared_items == both.sum()
        assert pair.kappa == pytest.approx(
            cohen_kappa_score(labels[row_a, both], labels[row_b, both])
        )


def test_cohen_kappa_undefined_and_too_few_shared_items():
    votes = [
        (1, "a", 2),
        (2, "a", 2),
        (3, "a", 2),
        (1, "b", 2),
        (2, "b", 2),
        (3, "b", 2),
        (3, "c", 1),
    ]
    pairs = cohen_kappa_pairs(votes)
    assert set(pairs) == {("a", "b")}  # c shares one item with each: no kappa
    assert pairs["a", "b"].kappa is None and pairs["a", "b"].shared_items == 3
    assert "chance agreement is 1" in pairs["a", "b"].undefined_because
    # One constant label each, but different ones: defined (kappa 0), as sklearn says.
    different = cohen_kappa_pairs([(1, "a", 0), (2, "a", 0), (1, "b", 1), (2, "b", 1)])
    assert different["a", "b"].kappa == cohen_kappa_score([0, 0], [1, 1]) == 0


def mixed_rater_counts(seed: int) -> tuple[np.ndarray, int, int]:
    """Labels where most items have exactly 3 votes and the rest 2 or 4. Returns the labels,
    the modal count and how many items have it, both known by construction."""
    rng = np.random.default_rng(seed)
    labels = simulate(ACCURACIES, seed)
    raters = rng.choice([2, 3, 4], size=len(TRUTH), p=[0.2, 0.6, 0.2])
    for item, count in enumerate(raters):
        dropped = rng.permutation(len(ACCURACIES))[count:]
        labels[dropped, item] = NO_VOTE
    return labels, 3, int((raters == 3).sum())


def test_fleiss_kappa_equals_statsmodels_on_items_with_the_modal_rater_count():
    labels, modal, n_modal = mixed_rater_counts(9)
    result = fleiss_kappa(as_votes(labels, ACCURACIES), K)
    assert result.raters_per_item == modal and result.items_used == n_modal
    subjects = labels[:, (labels != NO_VOTE).sum(axis=0) == modal].T
    rater_table = np.array([row[row != NO_VOTE] for row in subjects])  # (items, 3)
    table, _ = aggregate_raters(rater_table, n_cat=K)
    assert result.kappa == pytest.approx(statsmodels_fleiss(table))


def test_krippendorff_alpha_equals_the_package_on_a_reliability_matrix():
    labels, _, _ = mixed_rater_counts(10)
    labels[:, :40] = NO_VOTE
    labels[1, :40] = TRUTH[:40]  # 40 items with a single vote: not pairable
    reliability = np.where(labels == NO_VOTE, np.nan, labels).astype(float)
    expected = krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    assert krippendorff_alpha(as_votes(labels, ACCURACIES), K) == pytest.approx(expected)


# --- confusion between annotators, agreement with consensus ---------------------------------


def test_confusion_between_and_pairwise_confusion():
    labels = simulate(ACCURACIES, 11, coverage=0.5)
    names = list(ACCURACIES)
    votes = as_votes(labels, names)
    total = np.zeros((K, K), dtype=np.int64)
    for row_a, a in enumerate(names):
        for row_b, b in enumerate(names):
            if a == b:
                continue
            both = (labels[row_a] != NO_VOTE) & (labels[row_b] != NO_VOTE)
            expected = confusion_matrix(labels[row_a, both], labels[row_b, both], labels=range(K))
            matrix = confusion_between(votes, a, b, K)
            np.testing.assert_array_equal(matrix, expected)
            total += matrix
    np.testing.assert_array_equal(pairwise_confusion(votes, K), total)
    assert confusion_between(votes, "expert", "nobody", K).sum() == 0


def test_agreement_with_consensus_against_the_truth():
    labels = simulate(ACCURACIES, 12, coverage=0.8)
    names = list(ACCURACIES)
    truth = {item: int(label) for item, label in enumerate(TRUTH)}
    result = agreement_with_consensus(as_votes(labels, names), truth)
    for row, name in enumerate(names):
        assert result[name].share == pytest.approx(realized_accuracy(labels)[row])
        assert result[name].votes_compared == (labels[row] != NO_VOTE).sum()
    # Items without a consensus are left out.
    partial = agreement_with_consensus([(1, "a", 0), (2, "a", 1), (2, "b", 1)], {1: None, 2: 1})
    assert partial["a"].share == 1.0 and partial["a"].votes_compared == 1
    assert agreement_with_consensus([(1, "a", 0)], {}) == {
        "a": agreement_measures.ConsensusAgreement(None, 0)
    }


# --- edge cases -------------------------------------------------------------------------------


def test_empty_input():
    assert majority([], K) == {}
    result = dawid_skene([], K)
    assert result.items == [] and result.posteriors.shape == (0, K) and result.converged
    assert weighted_label(result.confusion_by_annotator(), result.priors, []).shape == (K,)
    assert cohen_kappa_pairs([]) == {}
    assert fleiss_kappa([], K) == agreement_measures.FleissKappa(None, None, 0)
    assert krippendorff_alpha([], K) is None
    assert pairwise_confusion([], K).sum() == 0
    assert agreement_with_consensus([], {}) == {}


def test_one_annotator_only():
    votes = [(item, "solo", int(TRUTH[item])) for item in range(100)]
    result = dawid_skene(votes, K)
    assert (result.labels == TRUTH[:100]).all()
    assert result.annotators == ["solo"]
    assert not weights_trustworthy(votes)
    assert cohen_kappa_pairs(votes) == {}
    assert fleiss_kappa(votes, K).kappa is None
    assert krippendorff_alpha(votes, K) is None


def test_ties_and_single_votes_in_majority():
    votes = [(1, "a", 0), (1, "b", 1), (2, "a", 2), (2, "b", 2), (2, "c", 3), (3, "a", 4)]
    result = majority(votes, K)
    assert result[1] == agreement.MajorityLabel(None, 0.5, 2)
    assert result[2].label == 2 and result[2].agreement == pytest.approx(2 / 3)
    assert result[3] == agreement.MajorityLabel(4, 1.0, 1)


def test_single_vote_items_do_not_count_for_alpha_or_fleiss():
    pairable = [(1, "a", 0), (1, "b", 0), (2, "a", 1), (2, "b", 0), (3, "a", 1), (3, "b", 1)]
    lonely = [(item, "a", item % K) for item in range(10, 30)]
    assert krippendorff_alpha(pairable + lonely, K) == pytest.approx(
        krippendorff_alpha(pairable, K)
    )
    assert fleiss_kappa(pairable + lonely, K) == fleiss_kappa(pairable, K)
    assert fleiss_kappa(pairable, K).items_used == 3


def test_last_vote_of_an_annotator_on_an_item_counts():
    indexed = index_votes([(1, "a", 0), (1, "b", 2), (1, "a", 2)], K)
    assert len(indexed.label) == 2
    assert majority(indexed, K)[1] == agreement.MajorityLabel(2, 1.0, 2)
    with pytest.raises(ValueError, match="class indices"):
        index_votes([(1, "a", K)], K)
    with pytest.raises(ValueError, match="class indices"):
        dawid_skene([(1, "a", 0)], K, gold={1: -1})


def test_a_class_nobody_used():
    # Digits 0-8 only: class 9 never appears in the truth or in any vote.
    keep = TRUTH != 9
    truth = TRUTH[keep]
    rng = np.random.default_rng(13)
    labels = simulate(ACCURACIES, 13, truth=truth)
    labels[labels == 9] = rng.integers(0, 9, (labels == 9).sum())
    votes = as_votes(labels, ACCURACIES)
    result = dawid_skene(votes, K)
    assert np.isfinite(result.confusions).all() and (result.confusions > 0).all()
    np.testing.assert_allclose(result.confusions.sum(axis=2), 1.0)
    assert result.priors[9] < 0.01 and (result.labels != 9).all()
    table, _ = aggregate_raters(labels.T, n_cat=K)
    assert fleiss_kappa(votes, K).kappa == pytest.approx(statsmodels_fleiss(table))
    reliability = labels.astype(float)
    assert krippendorff_alpha(votes, K) == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    )


# --- cross-check with cleanlab (crowdlab) -----------------------------------------------------


def test_dawid_skene_agrees_with_cleanlab_multiannotator():
    multiannotator = pytest.importorskip(
        "cleanlab.multiannotator", reason="cleanlab is not installed (pip install cleanlab)"
    )
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    labels = simulate(ACCURACIES, 14, coverage=0.75)
    names = list(ACCURACIES)
    result = dawid_skene(as_votes(labels, names), K)
    ds_labels = ds_labels_in_item_order(result, len(TRUTH))
    baseline = majority_random_ties(labels, 14)
    # crowdlab also wants a model's out-of-sample probabilities: a logistic regression on the
    # digits' pixels, trained on the majority labels, 5-fold.
    pixels = load_digits().data / 16
    pred_probs = cross_val_predict(
        LogisticRegression(max_iter=1000), pixels, baseline, cv=5, method="predict_proba"
    )
    frame = pd.DataFrame(np.where(labels == NO_VOTE, np.nan, labels).T, columns=names)
    crowdlab = multiannotator.get_label_quality_multiannotator(frame, pred_probs, verbose=False)
    quality = crowdlab["annotator_stats"]["annotator_quality"]
    crowdlab_labels = crowdlab["label_quality"]["consensus_label"].to_numpy()

    ds_accuracy = result.accuracy_by_annotator()
    assert sorted(names, key=quality.get) == sorted(names, key=ds_accuracy.get)
    assert (ds_labels == TRUTH).mean() > (baseline == TRUTH).mean()
    assert (crowdlab_labels == TRUTH).mean() > (baseline == TRUTH).mean()
    # crowdlab also sees the pixels, so it is the more accurate of the two; DS, from the votes
    # alone, should still move away from the majority toward crowdlab's answers.
    assert (ds_labels == crowdlab_labels).mean() > (baseline == crowdlab_labels).mean()
