"""How many labels the product needs, on Fashion-MNIST, with the code a round runs.

Pool: the first 20,000 training images ("balanced"), and a long-tailed pool cut from them
("long-tail": class counts falling 100:1, 2,000 down to 20, which class is rare drawn per
seed); test: the 10,000 test images. The default backbone, the input size the product
would choose for 28-px images, embeddings through the learner's own pipeline and cache.

Each method starts from no labels at all and labels a batch at a time (20 and 100):
  default            what a new project does: a typiclust cold start for the first batch,
                     then the default strategy, the head blended with label spreading
  random             random batches, the same model (the baseline to beat)
  <strategy>         that strategy after the same cold start, the same model
  ... -head          the same without label spreading (the logistic head alone)
Prints test accuracy and balanced (macro) accuracy at checkpoints (mean over seeds), the
expected calibration error (10 bins) of the test probabilities as predicted and after the
temperature fitted on out-of-fold predictions of the labeled images (learner/calibration.py),
the labels each method needs to reach --target accuracy (every seed, and their mean), and
the ceilings:
the head trained on every pool label, and the blend with every label.

    python bench/label_efficiency.py [--seeds 5] [--budget 1000] [--batches 20,100]
        [--pools balanced,long-tail] [--methods default,random,default-head,random-head]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fashion import load, write_pngs

import strategies
from server.config import ProjectConfig
from server.learner import Learner, LearnerConfig
from server.learner.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
)
from server.learner.catalog import choose_input_size
from server.learner.graph import EDGE_POWER, NEIGHBOURS, search
from server.learner.head import HeadModel, Projection
from server.learner.spreading import BLEND, spread_for

CHECKPOINTS = (20, 100, 200, 400, 600, 1000, 2000)
OUT = Path(__file__).resolve().parent / "out"
TEST_OFFSET = 100_001  # test image j has id TEST_OFFSET + j; train image i has id i + 1
COLD_START = "typiclust"


def embed_fashion(input_size: int, pool_size: int, semi_supervised: bool = False):
    """(pool features, pool labels, test features, test labels, learner): the first
    `pool_size` training images and the 10,000 test images, embedded through the learner's
    own pipeline and cache (float16, as the cache holds them); other benches share it."""
    train_x, train_y = load("train")
    test_x, test_y = load("test")
    paths = write_pngs(train_x[:pool_size], OUT / "fashion" / "train", "train")
    paths += write_pngs(test_x, OUT / "fashion" / "test", "test")
    learner = Learner(LearnerConfig(input_size=input_size, workers=1,
                                    semi_supervised=semi_supervised), OUT / "cache")
    # Fixed ids per image: the cache is keyed by id, so runs with other pools reuse it.
    pool_ids = np.arange(1, pool_size + 1)
    test_ids = np.arange(TEST_OFFSET, TEST_OFFSET + len(test_y))
    started = time.perf_counter()
    learner.embed(np.r_[pool_ids, test_ids], paths)
    print(f"embeddings ready in {time.perf_counter() - started:.0f} s ({len(paths)} images,"
          f" {input_size}x{input_size})")
    return (learner.embeddings(pool_ids, np.float16), train_y[:pool_size],
            learner.embeddings(test_ids, np.float16), test_y, learner)


class Data:
    """Embeddings of the whole 20,000 pool and the test set, the neighbour graph over the
    pool (as a round builds it) and each test image's nearest pool images."""

    def __init__(self, input_size: int, pool_size: int):
        self.x, self.y, self.test_x, self.test_y, self.learner = embed_fashion(
            input_size, pool_size, semi_supervised=True)
        self.pool_ids = np.arange(1, pool_size + 1)
        started = time.perf_counter()
        self._spread_over_pool()
        print(f"neighbour graph ready in {time.perf_counter() - started:.0f} s")

    def subset(self, rows: np.ndarray, test_rows: np.ndarray) -> Data:
        """The same data with the pool cut to `rows` (the graph among them), the test set
        to `test_rows`."""
        part = object.__new__(Data)
        part.learner = self.learner
        part.test_x, part.test_y = self.test_x[test_rows], self.test_y[test_rows]
        part.pool_ids, part.x, part.y = self.pool_ids[rows], self.x[rows], self.y[rows]
        part._spread_over_pool()
        return part

    def _spread_over_pool(self) -> None:
        """The spreading operator among the pool, and each test image's nearest pool images
        with their edge weights (how a test image gets spread probabilities)."""
        self.node_ids, self.operator = self.learner.spread_operator(self.pool_ids)
        graph = self.learner.neighbour_graph()
        nodes = graph.reduced[graph.positions(self.pool_ids)].astype(np.float32)
        self.test_neighbours, similarity = search(graph.reduce(self.test_x), nodes, NEIGHBOURS)
        self.test_weights = np.maximum(similarity, 0.0) ** EDGE_POWER


def long_tail(y: np.ndarray, test_y: np.ndarray, seed: int,
              ratio: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows, test rows) whose class counts fall geometrically by `ratio` from the most
    common class to the rarest (the test set in the same proportions, at least 10 a class,
    so accuracy weighs classes as the pool does and balanced accuracy weighs them equally);
    which class is which is drawn by the seed."""
    rng = np.random.default_rng(1000 + seed)
    classes = rng.permutation(np.unique(y))
    largest, largest_test = min(np.bincount(y)), min(np.bincount(test_y))
    rows, test_rows = [], []
    for rank, c in enumerate(classes):
        share = ratio ** (-rank / (len(classes) - 1))
        rows.append(rng.choice(np.flatnonzero(y == c), max(1, round(largest * share)),
                               replace=False))
        test_rows.append(rng.choice(np.flatnonzero(test_y == c),
                                    max(10, round(largest_test * share)), replace=False))
    return np.sort(np.concatenate(rows)), np.sort(np.concatenate(test_rows))


def predict(data: Data, labeled: np.ndarray, projection, spreading: bool):
    """(pool probabilities, test probabilities, classes) of the model trained on `labeled`
    (pool rows), as a round fits it: the head, blended with the spread labels."""
    head = HeadModel.fit(data.x[labeled], data.y[labeled], seed=0, projection=projection)
    classes = head.classes_
    pool, test = head.predict_proba(data.x), head.predict_proba(data.test_x)
    if spreading:
        spread = spread_for(data.node_ids, data.operator, data.pool_ids[labeled],
                            data.y[labeled], [int(c) for c in classes])
        pool = spread.mix(data.pool_ids, pool)
        around = (data.test_weights[:, :, None] * spread.probs[data.test_neighbours]).sum(1)
        around /= np.maximum(around.sum(axis=1, keepdims=True), 1e-12)
        test = (1.0 - BLEND) * test + BLEND * around
    return pool, test, classes


def scores(test_y: np.ndarray, probs: np.ndarray, classes: np.ndarray,
           temperature: float | None = None) -> tuple[float, ...]:
    """(accuracy, balanced accuracy, expected calibration error over 10 bins, the same after
    `temperature`, or nan without one)."""
    predicted = classes[probs.argmax(axis=1)]
    right = predicted == test_y
    balanced = float(np.mean([right[test_y == c].mean() for c in np.unique(test_y)]))
    after = (expected_calibration_error(apply_temperature(probs, temperature), right)
             if temperature else float("nan"))
    return float(right.mean()), balanced, expected_calibration_error(probs, right), after


def out_of_fold_temperature(data: Data, labeled: np.ndarray, projection,
                            spreading: bool) -> float | None:
    """The temperature a round would fit: 5-fold predictions for the labeled images, each
    fold's model (head and spread) knowing only the other folds' labels."""
    from sklearn.model_selection import StratifiedKFold

    y = data.y[labeled]
    classes, counts = np.unique(y, return_counts=True)
    keep = np.isin(y, classes[counts >= 2])
    rows, y = labeled[keep], y[keep]
    if len(np.unique(y)) < 2:
        return None
    folds = int(min(5, np.bincount(y)[np.unique(y)].min()))
    held_out = np.zeros((len(rows), len(classes)))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(rows, y):
        pool, _, fold_classes = predict(data, rows[train], projection, spreading)
        held_out[np.ix_(test, np.searchsorted(classes, fold_classes))] = pool[rows[test]]
    return fit_temperature(held_out, np.searchsorted(classes, y))


def simulate(data: Data, method: str, batch: int, budget: int, seed: int,
             default_strategy: str) -> dict[int, tuple[float, ...]]:
    """{labels: (accuracy, balanced accuracy, ece)} after each batch."""
    name, _, variant = method.partition("-")
    spreading = variant != "head"
    strategy = default_strategy if name == "default" else name
    query = strategies.get_strategy(strategy)
    rng = np.random.default_rng(seed)
    n = len(data.y)
    if strategy == "random":
        labeled = rng.permutation(n)[:batch]
    else:
        order, _ = strategies.rank_pool(strategies.get_strategy(COLD_START), None, data.x,
                                        batch, rng)
        labeled = order[:batch]
    # A round fits the label-free projection on labeled + pool images: the same set every
    # time here, so it is fitted once.
    projection = Projection.fit(data.x, seed)
    curve: dict[int, tuple[float, ...]] = {}
    while True:
        if len(np.unique(data.y[labeled])) < 2:  # a second cold-start batch, as a round does
            rest = np.setdiff1d(np.arange(n), labeled, assume_unique=True)
            order, _ = strategies.rank_pool(strategies.get_strategy(COLD_START), None,
                                            data.x[rest], batch, rng)
            labeled = np.concatenate([labeled, rest[order[:batch]]])
            continue
        pool_probs, test_probs, classes = predict(data, labeled, projection, spreading)
        temperature = (out_of_fold_temperature(data, labeled, projection, spreading)
                       if len(labeled) in (200, budget) else None)
        curve[len(labeled)] = scores(data.test_y, test_probs, classes, temperature)
        if len(labeled) >= budget:
            return curve
        rest = np.setdiff1d(np.arange(n), labeled, assume_unique=True)
        order, _ = strategies.rank_pool(query, pool_probs[rest], data.x[rest], batch, rng)
        labeled = np.concatenate([labeled, rest[order[:min(batch, budget - len(labeled))]]])


def at(curve: dict, labels: int) -> tuple[float, ...]:
    """The scores at the last evaluation with at most `labels` labels."""
    return curve[max(n for n in curve if n <= labels)]


def labels_to_reach(curve: dict, target: float) -> int | None:
    return next((n for n in sorted(curve) if curve[n][0] >= target), None)


def ceilings(data: Data) -> str:
    everything = np.arange(len(data.y))
    projection = Projection.fit(data.x, 0)
    head = scores(data.test_y, *predict(data, everything, projection, False)[1:])
    blend = scores(data.test_y, *predict(data, everything, projection, True)[1:])
    return (f"ceiling, every one of {len(data.y):,} labels: head {head[0]:.3f} (balanced"
            f" {head[1]:.3f}), blend {blend[0]:.3f} (balanced {blend[1]:.3f})")


def report(data_for, pool_name: str, methods: list[str], batch: int, args,
           default_strategy: str) -> None:
    checkpoints = [n for n in CHECKPOINTS if batch <= n <= args.budget]
    print(f"\n{pool_name} pool, batch {batch}: test accuracy / balanced accuracy, mean of"
          f" {args.seeds} seeds")
    print("method".ljust(16) + "".join(f"{n:>13}" for n in checkpoints)
          + f"   labels to {args.target:.2f}: each seed; mean   ECE at 200/{checkpoints[-1]}"
          " (raw; after the out-of-fold temperature)")
    means: dict[str, dict[int, float]] = {}
    for method in methods:
        started = time.perf_counter()
        curves = [simulate(data_for(seed), method, batch, args.budget, seed, default_strategy)
                  for seed in range(args.seeds)]
        cells = []
        for n in checkpoints:
            values = np.array([at(c, n) for c in curves])
            cells.append(f"{values[:, 0].mean():.3f}/{values[:, 1].mean():.3f}".rjust(13))
        means[method] = {n: float(np.mean([at(c, n)[0] for c in curves])) for n in checkpoints}
        reach = [labels_to_reach(c, args.target) for c in curves]
        reached = [r for r in reach if r]
        reach_text = ", ".join(str(r) if r else f">{args.budget}" for r in reach)
        mean_text = (f"{np.mean(reached):.0f}" if len(reached) == len(reach)
                     else f">{args.budget}")
        ece = [np.mean([at(c, n)[k] for c in curves]) for k in (2, 3)
               for n in (200, checkpoints[-1])]
        print(method.ljust(16) + "".join(cells) + f"   {reach_text}; {mean_text}"
              f"   {ece[0]:.3f}/{ece[1]:.3f}; {ece[2]:.3f}/{ece[3]:.3f}"
              f"   ({time.perf_counter() - started:.0f} s)", flush=True)
    if "random" in means:
        for method in (m for m in methods if m not in ("random", "random-head")):
            baseline = "random-head" if method.endswith("-head") and "random-head" in means \
                else "random"
            worst = min(means[method][n] - means[baseline][n] for n in checkpoints)
            print(f"{method} minus {baseline}, worst checkpoint: {worst:+.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--batches", default="20,100")
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--pools", default="balanced,long-tail")
    parser.add_argument("--target", type=float, default=0.80)
    parser.add_argument("--input-size", type=int, default=0,
                        help="0: as the product chooses for 28-px images")
    parser.add_argument("--methods", default="default,random,default-head,random-head")
    args = parser.parse_args()
    default = ProjectConfig(name="-")
    size = args.input_size or choose_input_size(28, default.backbone)[0]
    data = Data(size, args.pool)
    print(ceilings(data))
    methods = args.methods.split(",")
    tails: dict[int, Data] = {}

    def long_tailed(seed: int) -> Data:
        if seed not in tails:
            tails[seed] = data.subset(*long_tail(data.y, data.test_y, seed))
        return tails[seed]

    for pool_name in args.pools.split(","):
        data_for = (lambda _seed: data) if pool_name == "balanced" else long_tailed
        if pool_name == "long-tail":
            tail = long_tailed(0)
            print(f"\nlong-tail pool: {len(tail.y):,} images (seed 0), class counts"
                  f" {sorted(np.bincount(tail.y).tolist(), reverse=True)}; test set"
                  f" {len(tail.test_y):,} in the same proportions")
        for batch in (int(b) for b in args.batches.split(",")):
            report(data_for, pool_name, methods, batch, args, default.strategy)
    print("\nreproduce: python bench/label_efficiency.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
