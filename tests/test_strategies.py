"""Query strategies: every registered one keeps the shared contract (parametrized over the
registry, so a new strategy is checked without a new test); the uncertainty measures agree
with modAL's own functions and with values worked out by hand; cluster_margin and
diverse_margin spread their first batch over the data instead of taking near-duplicates, and
diverse_margin takes each cluster's typical image rather than its odd one out."""

from __future__ import annotations

import numpy as np
import pytest
from modAL.uncertainty import classifier_entropy, classifier_margin, classifier_uncertainty
from sklearn.base import BaseEstimator

import strategies
from server.cli.main import main
from server.config import ProjectConfig
from strategies.diverse import BATCH, CANDIDATES_PER_PICK, POOL_SHARE, candidate_count
from strategies.registry import UnknownStrategy
from strategies.uncertainty import uncertainty_scores

# Enough images that cluster_margin clusters (it only does past BATCH).
N = 3 * BATCH


def pool(n: int = N, classes: int = 4, dim: int = 8, seed: int = 0):
    """Probabilities (rows of a Dirichlet) and embeddings for a pool of n images."""
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(classes), size=n), rng.normal(size=(n, dim))


@pytest.mark.parametrize("name", strategies.names())
@pytest.mark.parametrize("k", [1, 37, N, N + 10])
def test_every_strategy_returns_k_unique_positions_in_range(name, k):
    probs, embeddings = pool()
    indices, scores = strategies.get_strategy(name)(probs, embeddings, k, np.random.default_rng(3))
    assert len(indices) == min(k, N)
    assert len(scores) == len(indices)
    assert len(set(indices.tolist())) == len(indices)
    assert indices.min() >= 0 and indices.max() < N
    assert np.issubdtype(np.asarray(indices).dtype, np.integer)


@pytest.mark.parametrize("name", strategies.names())
def test_every_strategy_is_deterministic_for_a_seed(name):
    probs, embeddings = pool()
    strategy = strategies.get_strategy(name)
    first = strategy(probs, embeddings, 120, np.random.default_rng(11))
    again = strategy(probs, embeddings, 120, np.random.default_rng(11))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


@pytest.mark.parametrize("name", strategies.names())
def test_every_strategy_handles_a_tiny_pool(name):
    probs, embeddings = pool(n=3)
    indices, _ = strategies.get_strategy(name)(probs, embeddings, 10, np.random.default_rng(0))
    assert sorted(indices.tolist()) == [0, 1, 2]


@pytest.mark.parametrize("name", strategies.names())
def test_every_strategy_has_a_one_line_description(name):
    assert len(strategies.describe(name)) > 10


class Fitted(BaseEstimator):
    """What modAL's functions call: a classifier whose predict_proba returns known rows."""

    def __init__(self, probs=None):
        self.probs = probs

    def predict_proba(self, X):
        return self.probs[X]


HAND = np.array([
    [0.50, 0.30, 0.20],  # 1 - max = 0.5, margin 0.2 (score 0.8)
    [0.90, 0.05, 0.05],  # confident: 0.1, margin 0.85
    [0.40, 0.40, 0.20],  # a tie at the top: margin 0
    [1 / 3, 1 / 3, 1 / 3],  # uniform: the highest entropy, ln 3
])


def test_uncertainty_scores_match_modal():
    probs, _ = pool(n=50, classes=5)
    positions, model = np.arange(50), Fitted(probs)
    np.testing.assert_allclose(uncertainty_scores("least_confidence", probs),
                               classifier_uncertainty(model, positions))
    np.testing.assert_allclose(uncertainty_scores("margin", probs),
                               1 - classifier_margin(model, positions))
    np.testing.assert_allclose(uncertainty_scores("entropy", probs),
                               classifier_entropy(model, positions))


def test_uncertainty_scores_by_hand():
    np.testing.assert_allclose(uncertainty_scores("least_confidence", HAND),
                               [0.5, 0.1, 0.6, 2 / 3])
    np.testing.assert_allclose(uncertainty_scores("margin", HAND), [0.8, 0.15, 1.0, 1.0])
    entropy = [-sum(p * np.log(p) for p in row) for row in HAND]
    np.testing.assert_allclose(uncertainty_scores("entropy", HAND), entropy)
    np.testing.assert_allclose(entropy[3], np.log(3))


@pytest.mark.parametrize(("name", "expected"), [
    ("least_confidence", [3, 2, 0, 1]),
    ("entropy", [3, 2, 0, 1]),  # 1.099, 1.055, 1.030, 0.394
])
def test_uncertainty_strategies_rank_most_uncertain_first(name, expected):
    indices, scores = strategies.get_strategy(name)(HAND, None, 4, np.random.default_rng(0))
    assert indices.tolist() == expected
    assert np.all(np.diff(scores) <= 0)  # best first


def test_margin_ranks_ties_at_random_but_seeded():
    # Rows 2 and 3 both have margin 0: either may come first, the same way for a seed.
    orders = {
        tuple(strategies.get_strategy("margin")(HAND, None, 4, np.random.default_rng(s))[0])
        for s in range(20)
    }
    assert orders == {(2, 3, 0, 1), (3, 2, 0, 1)}


@pytest.mark.parametrize("k", [1, 5, 25, 80, 100])
def test_top_k_takes_the_best_and_settles_ties_at_the_cut_at_random(k):
    # 100 scores in ten levels of ten equal values: whichever way top_k finds them (few of
    # many or a whole sort), the k best come first, best first, and which of a tied level
    # get in at the cut varies by seed, the same way for the same seed.
    from strategies.uncertainty import top_k

    scores = np.repeat(np.arange(10.0), 10)[np.random.default_rng(0).permutation(100)]
    picks = []
    for seed in range(30):
        order, got = top_k(scores, k, np.random.default_rng(seed))
        assert len(set(order.tolist())) == k and np.array_equal(got, scores[order])
        assert np.all(np.diff(got) <= 0)
        assert np.array_equal(np.sort(got)[::-1], np.sort(scores)[::-1][:k])
        again, _ = top_k(scores, k, np.random.default_rng(seed))
        assert np.array_equal(order, again)
        picks.append(frozenset(order.tolist()))
    if k % 10:  # the cut falls inside a level: its members take turns
        assert len(set(picks)) > 1


def test_random_works_before_any_model():
    # The queue before the first round: no probabilities yet, only a pool size.
    _, embeddings = pool(n=30)
    indices, scores = strategies.get_strategy("random")(None, embeddings, 30,
                                                        np.random.default_rng(0))
    assert sorted(indices.tolist()) == list(range(30))
    assert not np.any(scores)


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy", "cluster_margin",
                                  "diverse_margin"])
def test_uncertainty_strategies_need_probabilities(name):
    _, embeddings = pool(n=30)
    with pytest.raises(ValueError, match="probabilities"):
        strategies.get_strategy(name)(None, embeddings, 5, np.random.default_rng(0))


def duplicate_clusters(clusters: int = 20, per_cluster: int = 30, seed: int = 0):
    """Tight clusters of near-identical images; the first four clusters are the most
    uncertain, so a pure uncertainty ranking fills a whole batch from them alone."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(clusters, 16))
    cluster = np.repeat(np.arange(clusters), per_cluster)
    embeddings = centres[cluster] + rng.normal(scale=0.01, size=(len(cluster), 16))
    top = np.where(cluster < 4, 0.5, 0.9) + rng.uniform(-0.02, 0.02, size=len(cluster))
    probs = np.column_stack([top, 1 - top])
    return probs, embeddings, cluster


@pytest.mark.parametrize("name", ["cluster_margin", "diverse_margin"])
def test_clustering_strategies_spread_their_first_batch_over_clusters(name):
    probs, embeddings, cluster = duplicate_clusters()
    rng = np.random.default_rng(0)
    margin, _ = strategies.get_strategy("margin")(probs, embeddings, BATCH, rng)
    spread, _ = strategies.get_strategy(name)(probs, embeddings, BATCH, rng)
    assert len(set(cluster[margin])) == 4  # 100 picks from 4 clusters of duplicates
    assert len(set(cluster[spread])) == 20  # every cluster gives some
    # ...and the most uncertain images still come first.
    assert set(cluster[spread[:4]]) <= {0, 1, 2, 3}


@pytest.mark.parametrize("name", ["cluster_margin", "diverse_margin"])
def test_clustering_strategies_with_exact_duplicates(name):
    # Identical images give identical embeddings: fewer distinct points than clusters.
    probs, embeddings, cluster = duplicate_clusters(clusters=5, per_cluster=40)
    embeddings = embeddings.round(0)
    indices, _ = strategies.get_strategy(name)(probs, embeddings, BATCH,
                                               np.random.default_rng(0))
    assert len(set(indices.tolist())) == BATCH
    assert len(set(cluster[indices])) == 5


def with_confident_filler(total: int, probs, embeddings, *marks, seed: int = 1):
    """The pool padded to `total` images with ones the model is 99 % sure of, far from the
    rest: they are never candidates, but a pool this large lets a strategy take its full
    CANDIDATES_PER_PICK per pick (it takes at most a POOL_SHARE-th of the pool). Each of
    `marks` (a per-image array: cluster, group, odd one out) is padded with -1 or False."""
    rng = np.random.default_rng(seed)
    extra = total - len(probs)
    filler_probs = np.zeros((extra, probs.shape[1]))
    filler_probs[:, 0], filler_probs[:, 1:] = 0.99, 0.01 / (probs.shape[1] - 1)
    filler = rng.normal(loc=-100.0, size=(extra, embeddings.shape[1]))
    padded = [np.r_[m, np.full(extra, False if m.dtype == bool else -1)] for m in marks]
    return np.vstack([probs, filler_probs]), np.vstack([embeddings, filler]), *padded


def test_typiclust_needs_no_model_and_covers_every_cluster_largest_first():
    _, embeddings, cluster = duplicate_clusters()
    # Cluster 0 twice as large as the rest: its typical image comes first.
    embeddings = np.vstack([embeddings, embeddings[cluster == 0] + 0.001])
    cluster = np.r_[cluster, cluster[cluster == 0]]
    order, scores = strategies.get_strategy("typiclust")(None, embeddings, 20,
                                                         np.random.default_rng(0))
    assert len(set(cluster[order])) == 20
    assert cluster[order[0]] == 0
    assert np.all(np.diff(scores) <= 0)
    with pytest.raises(ValueError, match="embeddings"):
        strategies.get_strategy("typiclust")(None, None, 5, np.random.default_rng(0))


def test_typiclust_first_batch_covers_more_digits_than_random_draws():
    # The cold start on real images: the first 20 of 1,797 digits, no labels at all.
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    ranked, _ = strategies.rank_pool(strategies.get_strategy("typiclust"), None, x, 20,
                                     np.random.default_rng(0))
    covered = len(set(y[ranked[:20]]))
    draws = [len(set(y[np.random.default_rng(seed).choice(len(y), 20, replace=False)]))
             for seed in range(50)]
    assert covered >= 9 and covered > np.mean(draws)
    assert sorted(ranked.tolist()) == list(range(len(y)))  # the whole pool, once each


def test_candidates_are_ten_per_pick_but_at_most_a_tenth_of_the_pool():
    assert candidate_count(20_000, 100) == 100 * CANDIDATES_PER_PICK == 1000
    assert candidate_count(20_000, 20) == 200
    assert candidate_count(5_000, 100) == 5_000 // POOL_SHARE == 500
    assert candidate_count(1_757, 100) == 200  # the demo after 40 labels: 2 per pick
    assert candidate_count(150, 100) == 150  # never more than the pool


def test_diverse_margin_leads_with_uncertain_images_on_a_small_real_pool():
    # The demo's situation on real images: 1,797 digits, 40 labeled, the rest ranked. The
    # first images an annotator sees must be ones the model is unsure of, not merely typical.
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    labeled = np.concatenate([rng.choice(np.flatnonzero(y == c), 4, replace=False)
                              for c in range(10)])
    rest = np.setdiff1d(np.arange(len(y)), labeled)
    probs = LogisticRegression(C=0.01, max_iter=2000).fit(x[labeled], y[labeled]).predict_proba(
        x[rest])
    order, _ = strategies.get_strategy("diverse_margin")(probs, x[rest], len(rest), rng)
    margin = uncertainty_scores("margin", probs)
    rank_of = np.argsort(np.argsort(-margin))  # 0 = the most uncertain image
    # The first ten shown are all within the most uncertain twentieth of the pool (taking
    # candidates from 1,000 of these 1,757, they reached past the hundredth)...
    assert rank_of[order[:10]].max() < len(rest) / 20
    # ...and from ten different places, not ten near-copies.
    assert len(set(y[rest][order[:10]])) >= 5


def test_diverse_margin_clusters_a_small_batch_from_its_own_candidates():
    # Asked for 20: the 200 most uncertain (the four uncertain groups and the top of the
    # rest) in 20 clusters, so the 20 picks cover every group those candidates come from.
    probs, embeddings, cluster = duplicate_clusters(clusters=20, per_cluster=30)
    probs, embeddings, cluster = with_confident_filler(20 * 10 * POOL_SHARE, probs, embeddings,
                                                       cluster)
    k = 20
    margin, _ = strategies.get_strategy("margin")(probs, embeddings, k * CANDIDATES_PER_PICK,
                                                  np.random.default_rng(0))
    picks, _ = strategies.get_strategy("diverse_margin")(probs, embeddings, k,
                                                         np.random.default_rng(0))
    assert len(picks) == k and set(picks) <= set(margin)
    assert set(cluster[picks]) == set(cluster[margin])
    assert len(set(cluster[margin])) > 4  # more groups than plain margin's top 20 reach
    top20, _ = strategies.get_strategy("margin")(probs, embeddings, k, np.random.default_rng(0))
    assert set(cluster[top20]) <= {0, 1, 2, 3}


def groups_with_an_odd_one(groups: int = BATCH, per_group: int = 10, seed: int = 0):
    """Well separated groups of similar images; in each, the most uncertain image lies at the
    group's edge, away from the others (an odd one out)."""
    rng = np.random.default_rng(seed)
    centres = 50 + rng.normal(scale=10.0, size=(groups, 16))
    offsets = rng.normal(scale=0.3, size=(groups, per_group, 16))
    offsets -= offsets.mean(axis=1, keepdims=True)
    offsets[:, 0] += 2.0  # the odd one out: item 0 of each group
    embeddings = (centres[:, None, :] + offsets).reshape(-1, 16)
    group = np.repeat(np.arange(groups), per_group)
    odd = np.tile(np.arange(per_group) == 0, groups)
    top = np.where(odd, 0.5, 0.7) + rng.uniform(0.0, 0.05, size=len(group))
    return np.column_stack([top, 1 - top]), embeddings, group, odd


def test_diverse_margin_takes_each_clusters_typical_image():
    probs, embeddings, group, odd = groups_with_an_odd_one()
    probs, embeddings, group, odd = with_confident_filler(
        BATCH * CANDIDATES_PER_PICK * POOL_SHARE, probs, embeddings, group, odd)
    margin, _ = strategies.get_strategy("margin")(probs, embeddings, BATCH,
                                                  np.random.default_rng(0))
    assert odd[margin].all()  # margin's batch: every group's odd one out
    picks, scores = strategies.get_strategy("diverse_margin")(probs, embeddings, BATCH,
                                                              np.random.default_rng(0))
    assert len(set(group[picks])) >= 0.9 * BATCH  # one from (nearly) every group
    assert odd[picks].mean() <= 0.1  # ...and that one a typical image, not the odd one
    np.testing.assert_allclose(scores, uncertainty_scores("margin", probs)[picks])


def test_diverse_margin_ranks_the_rest_by_margin():
    # A whole-pool ranking (what a round asks for): the clustered candidates first, then
    # every other image by plain margin.
    probs, embeddings = pool(n=BATCH * CANDIDATES_PER_PICK + 200)
    candidates = candidate_count(len(probs), BATCH)
    order, scores = strategies.get_strategy("diverse_margin")(probs, embeddings, len(probs),
                                                             np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(len(probs)))
    assert scores[candidates:].max() <= scores[:candidates].min()
    assert np.all(np.diff(scores[candidates:]) <= 0)


@pytest.mark.parametrize("name", strategies.names())
def test_rank_pool_puts_the_strategys_batch_first_then_the_rest(name):
    probs, embeddings, _ = duplicate_clusters(clusters=20, per_cluster=100)
    k = 20
    ranked, scores = strategies.rank_pool(strategies.get_strategy(name), probs, embeddings, k,
                                          np.random.default_rng(0))
    rng = np.random.default_rng(0)
    whole, _ = strategies.get_strategy(name)(probs, embeddings, len(probs), rng)
    batch, _ = strategies.get_strategy(name)(probs, embeddings, k, rng)  # same draws
    assert sorted(ranked.tolist()) == list(range(len(probs)))  # every image, once
    assert ranked[:k].tolist() == batch.tolist()
    assert ranked[k:].tolist() == [i for i in whole if i not in set(batch)]
    if name in ("margin", "least_confidence", "entropy"):
        np.testing.assert_allclose(scores, uncertainty_scores(name, probs)[ranked])
    # No batch: the strategy's whole-pool ranking as it is.
    alone, _ = strategies.rank_pool(strategies.get_strategy(name), probs, embeddings, None,
                                    np.random.default_rng(0))
    assert alone.tolist() == whole.tolist()


def test_rank_pool_asks_diverse_margin_for_a_batch_of_its_size():
    # 20 picks from 20 clusters of the 200 most uncertain (every group those reach), where
    # the whole-pool ranking's first 20 come from its 100 clusters' most uncertain images.
    probs, embeddings, cluster = duplicate_clusters(clusters=20, per_cluster=30)
    probs, embeddings, cluster = with_confident_filler(20 * 10 * POOL_SHARE, probs, embeddings,
                                                       cluster)
    ranked, _ = strategies.rank_pool(strategies.get_strategy("diverse_margin"), probs,
                                     embeddings, 20, np.random.default_rng(0))
    whole, _ = strategies.get_strategy("diverse_margin")(probs, embeddings, len(probs),
                                                         np.random.default_rng(0))
    assert len(set(cluster[ranked[:20]])) > len(set(cluster[whole[:20]]))


@pytest.mark.parametrize("name", ["diverse_margin", "cluster_margin"])
def test_clustering_strategies_with_one_class_and_float16_embeddings(name):
    # One class: every probability is 1, every margin the same. The cache's float16 rows.
    _, embeddings = pool()
    probs = np.ones((N, 1))
    indices, scores = strategies.get_strategy(name)(probs, embeddings.astype(np.float16), 50,
                                                    np.random.default_rng(0))
    assert len(set(indices.tolist())) == 50
    assert np.all(scores == scores[0])


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(UnknownStrategy) as caught:
        strategies.get_strategy("most_fun")
    for name in strategies.names():
        assert name in str(caught.value)


def test_registering_needs_a_new_name_a_docstring_and_the_contract_s_arguments():
    with pytest.raises(ValueError, match="already registered"):
        strategies.register("margin")(lambda probs, embeddings, k, rng: None)

    def undocumented(probs, embeddings, k, rng):
        return None

    with pytest.raises(ValueError, match="docstring"):
        strategies.register("undocumented")(undocumented)
    assert "undocumented" not in strategies.names()

    def by_old_names(scores, features, k, rng):
        """A strategy that does not take the contract's arguments."""

    with pytest.raises(TypeError, match="every strategy takes"):
        strategies.register("by_old_names")(by_old_names)
    assert "by_old_names" not in strategies.names()


def test_cli_lists_strategies_with_descriptions(runner):
    result = runner.invoke(main, ["strategies"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == strategies.names()
    for line, name in zip(lines, strategies.names()):
        assert strategies.describe(name) in line
    assert [line.split()[0] for line in lines if line.endswith("(default)")] == \
        [ProjectConfig(name="x").strategy]
