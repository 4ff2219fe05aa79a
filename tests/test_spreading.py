"""The neighbour graph and label spreading on real images: scikit-learn's 1,797 digits (their
8x8 pixels stand in for embeddings, non-negative as pooled features are), and a real project
whose rounds spread their labels over the graph kept beside the embedding cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits
from test_rounds import FAST, Data, configure, make_project

from server.jobs.round import run_round
from server.learner.calibration import apply_temperature, fit_temperature
from server.learner.graph import REBUILD_GROWTH, NeighbourGraphStore, adjacency, search
from server.learner.head import HeadModel
from server.learner.setup import make_learner
from server.learner.spreading import spread_for


@pytest.fixture(scope="module")
def pixels():
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float16), y


def vectors_of(x):
    return lambda ids: x[np.asarray(ids) - 1]  # image id i is row i - 1


def test_the_graph_links_images_of_the_same_digit(tmp_path, pixels):
    x, y = pixels
    ids = np.arange(1, len(y) + 1)
    graph = NeighbourGraphStore(tmp_path).ensure(ids, vectors_of(x))
    assert np.array_equal(graph.ids, ids) and graph.neighbours.shape == (len(y), 10)
    assert not np.any(graph.neighbours == graph.ids[:, None])  # nobody is their own neighbour
    same = y[graph.neighbours - 1] == y[:, None]
    assert same.mean() > 0.9
    # Best first, and symmetric once made an adjacency.
    assert np.all(np.diff(graph.similarity, axis=1) <= 1e-6)
    w = adjacency(graph, ids)
    assert (w != w.T).nnz == 0 and w.diagonal().sum() == 0


def test_the_graph_grows_with_new_images_and_is_kept_on_disk(tmp_path, pixels):
    x, y = pixels
    store = NeighbourGraphStore(tmp_path)
    first = store.ensure(np.arange(1, 1001), vectors_of(x))
    grown = store.ensure(np.arange(1, 1201), vectors_of(x))
    # The old images keep their lists; the new ones find theirs among all 1,200, exactly.
    np.testing.assert_array_equal(grown.neighbours[:1000], first.neighbours)
    reduced = grown.reduced.astype(np.float32)
    expected, _ = search(reduced[1000:], reduced, 10, exclude=np.arange(1000, 1200))
    np.testing.assert_array_equal(np.sort(grown.neighbours[1000:], axis=1),
                                  np.sort(grown.ids[expected], axis=1))
    assert grown.basis_size == 1000
    # Another process (a new store on the folder) finds it as saved.
    again = NeighbourGraphStore(tmp_path).load()
    np.testing.assert_array_equal(again.neighbours, grown.neighbours)
    # Past REBUILD_GROWTH times the images its basis was fitted on, it is built anew.
    small = NeighbourGraphStore(tmp_path / "small")
    assert small.ensure(np.arange(1, 801), vectors_of(x)).basis_size == 800
    assert len(y) > REBUILD_GROWTH * 800
    rebuilt = small.ensure(np.arange(1, len(y) + 1), vectors_of(x))
    assert rebuilt.basis_size == len(y) and len(rebuilt.ids) == len(y)


def test_the_operator_is_cached_for_the_same_images_only(tmp_path, pixels):
    x, _ = pixels
    store = NeighbourGraphStore(tmp_path)
    ids = np.arange(1, 801)
    graph = store.ensure(ids, vectors_of(x))
    _, first = store.operator(graph, ids)
    cached = tmp_path / "operator-10.npz"
    stamp = cached.stat().st_mtime_ns
    _, again = store.operator(graph, ids)
    assert cached.stat().st_mtime_ns == stamp and (first != again).nnz == 0
    fewer, other = store.operator(graph, ids[:700])
    assert len(fewer) == 700 and other.shape == (700, 700)
    assert cached.stat().st_mtime_ns != stamp


def test_spreading_two_labels_per_digit_labels_most_of_the_rest(tmp_path, pixels):
    x, y = pixels
    ids = np.arange(1, len(y) + 1)
    store = NeighbourGraphStore(tmp_path)
    node_ids, operator = store.operator(store.ensure(ids, vectors_of(x)), ids)
    rng = np.random.default_rng(0)
    labeled = np.concatenate([rng.choice(np.flatnonzero(y == c), 2, replace=False)
                              for c in range(10)])
    rest = np.setdiff1d(np.arange(len(y)), labeled)
    spread = spread_for(node_ids, operator, ids[labeled], y[labeled], list(range(10)))
    spread_accuracy = np.mean(spread.probs[rest].argmax(axis=1) == y[rest])
    head = HeadModel.fit(x[labeled].astype(np.float32), y[labeled])
    head_probs = head.predict_proba(x[rest])
    head_accuracy = np.mean(head_probs.argmax(axis=1) == y[rest])
    blended = spread.mix(ids[rest], head_probs)
    assert spread_accuracy > 0.8 and spread_accuracy > head_accuracy + 0.05
    assert np.mean(blended.argmax(axis=1) == y[rest]) > head_accuracy
    np.testing.assert_allclose(blended.sum(axis=1), 1.0)
    # An image the spread never saw keeps the head's probabilities.
    np.testing.assert_array_equal(spread.mix([10_000], head_probs[:1]), head_probs[:1])


def test_a_temperature_fitted_out_of_fold_sharpens_underconfident_probabilities():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 2000)
    sure = np.full((2000, 4), 0.1)
    sure[np.arange(2000), truth] = 0.7  # right every time, but only 70 % sure
    temperature = fit_temperature(sure, truth)
    assert temperature < 0.5
    assert apply_temperature(sure, temperature).max(axis=1).min() > 0.95


def test_rounds_spread_their_labels_over_the_graph_beside_the_cache(tmp_path, digits):
    project = make_project(tmp_path, digits, 60)
    data = Data(project, digits)
    labeled = data.label_per_class("ann", 2)
    spread_round = data.new_round("margin")
    summary = run_round(project, spread_round)
    assert summary["mode"] == "head" and summary["accuracy"] is not None
    # The estimate's held-out predictions fitted a temperature, and the published
    # confidences were rescaled by it: each still at least 1 / classes.
    row = data.round(spread_round)
    assert row["temperature"] == pytest.approx(summary["temperature"]) and row["temperature"] > 0
    errors = json.loads(row["calibration"])
    assert 0 <= errors["error_before"] <= 1 and 0 <= errors["error_after"] <= 1
    assert all(1 / 10 - 1e-9 <= p["confidence"] <= 1
               for p in data.predictions(spread_round).values())
    folder = make_learner(project).cache().folder
    graph = NeighbourGraphStore(folder).load()
    assert len(graph.ids) == 60 and (folder / "projection.npz").exists()
    stamp = NeighbourGraphStore(folder).path.stat().st_mtime_ns

    head_only = configure(project, semi_supervised=False)
    plain_round = data.new_round("margin")
    run_round(head_only, plain_round)
    spread_conf = {i: p["confidence"] for i, p in data.predictions(spread_round).items()}
    plain_conf = {i: p["confidence"] for i, p in data.predictions(plain_round).items()}
    assert set(spread_conf) == set(plain_conf) and not set(spread_conf) & set(labeled)
    assert any(abs(spread_conf[i] - plain_conf[i]) > 1e-3 for i in spread_conf)
    # Another round over the same images reuses the graph as it is.
    configure(project, **FAST)
    run_round(project, data.new_round("margin"))
    assert NeighbourGraphStore(folder).path.stat().st_mtime_ns == stamp


def test_a_pool_past_the_graphs_limit_trains_without_spreading_and_says_so(tmp_path, digits):
    project = make_project(tmp_path, digits, 40)
    data = Data(project, digits)
    data.label_per_class("ann", 2)
    learner = make_learner(project)
    learner.config.max_graph_images = 39
    round_id = data.new_round("margin")
    summary = run_round(project, round_id, learner)
    assert ("no label spreading: 40 images are more than the neighbour graph's 39"
            in data.round(round_id)["message"])
    assert summary["accuracy"] is not None
    assert NeighbourGraphStore(learner.cache().folder).load() is None
