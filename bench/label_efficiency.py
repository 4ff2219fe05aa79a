"""How many labels each query strategy needs, on Fashion-MNIST, with the code a round runs.

Pool: the first 20,000 training images; test: the 10,000 test images; the project's default
backbone and input size, embeddings through the learner's own pipeline and cache. Start with
2 labels per class, then batches of 20 and of 100 up to 2,000 labels, for every registered
strategy and 3 seeds. Prints accuracy at 100/200/500/1000/2000 labels (mean ± sd), the
ceiling (the head trained on all 20,000), and the labels each strategy needs to reach 95 % of
the ceiling.

    python bench/label_efficiency.py [--seeds 3] [--budget 2000] [--batches 20,100]
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
from server.learner import Learner, LearnerConfig
from server.learner.head import HeadModel, Projection

CHECKPOINTS = (100, 200, 500, 1000, 2000)
OUT = Path(__file__).resolve().parent / "out"


def embed_fashion(input_size: int, pool_size: int) -> tuple[np.ndarray, ...]:
    train_x, train_y = load("train")
    test_x, test_y = load("test")
    paths = write_pngs(train_x[:pool_size], OUT / "fashion" / "train", "train")
    paths += write_pngs(test_x, OUT / "fashion" / "test", "test")
    learner = Learner(LearnerConfig(input_size=input_size, workers=1), OUT / "cache")
    # Fixed ids per image (train i -> i + 1, test j -> 100,001 + j): the cache is keyed by
    # id, so runs with other pool sizes reuse it safely.
    ids = np.concatenate([np.arange(1, pool_size + 1), np.arange(100_001, 100_001 + len(test_y))])
    started = time.perf_counter()
    learner.embed(ids, paths)
    print(f"embeddings ready in {time.perf_counter() - started:.0f} s "
          f"({len(paths)} images, {input_size}x{input_size})")
    features = learner.embeddings(ids)
    return features[:pool_size], train_y[:pool_size], features[pool_size:], test_y


def simulate(strategy: str, pool_x, pool_y, test_x, test_y, batch: int, budget: int,
             seed: int) -> dict[int, float]:
    """Accuracy on the test set after each batch: the curve {labels: accuracy}."""
    rng = np.random.default_rng(seed)
    query = strategies.get_strategy(strategy)
    labeled = np.concatenate([
        rng.choice(np.flatnonzero(pool_y == c), 2, replace=False) for c in np.unique(pool_y)
    ])
    curve: dict[int, float] = {}
    # A round fits the label-free projection on labeled + pool images: the same set every
    # time here, so it is fitted once.
    projection = Projection.fit(pool_x, seed)
    while True:
        head = HeadModel.fit(pool_x[labeled], pool_y[labeled], seed=seed, projection=projection)
        curve[len(labeled)] = float(np.mean(head.predict(test_x) == test_y))
        if len(labeled) >= budget:
            return curve
        rest = np.setdiff1d(np.arange(len(pool_y)), labeled, assume_unique=True)
        probs = head.predict_proba(pool_x[rest])
        # As a round ranks the pool with the project's query_batch = the batch size.
        order, _ = strategies.rank_pool(query, probs, pool_x[rest], batch, rng)
        labeled = np.concatenate([labeled, rest[order[:min(batch, budget - len(labeled))]]])


def at(curve: dict[int, float], labels: int) -> float:
    """Accuracy at the last evaluation with at most `labels` labels."""
    return curve[max(n for n in curve if n <= labels)]


def labels_to_reach(curve: dict[int, float], target: float) -> int | None:
    return next((n for n in sorted(curve) if curve[n] >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--batches", default="20,100")
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--input-size", type=int, default=LearnerConfig().input_size)
    parser.add_argument("--strategies", default="random,margin,entropy,least_confidence,"
                        + ",".join(n for n in strategies.names() if n not in
                                   ("random", "margin", "entropy", "least_confidence")))
    args = parser.parse_args()
    pool_x, pool_y, test_x, test_y = embed_fashion(args.input_size, args.pool)
    ceiling_head = HeadModel.fit(pool_x, pool_y, unlabeled=pool_x, seed=0)
    ceiling = float(np.mean(ceiling_head.predict(test_x) == test_y))
    target = 0.95 * ceiling
    print(f"ceiling (head on all {len(pool_y)} labels): {ceiling:.3f}; 95 % of it: {target:.3f}")
    names = args.strategies.split(",")
    for batch in (int(b) for b in args.batches.split(",")):
        print(f"\nbatch {batch}: test accuracy, mean ± sd over {args.seeds} seeds")
        header = "strategy".ljust(18) + "".join(f"{n:>14}" for n in CHECKPOINTS if n <= args.budget)
        print(header + "   labels to 95 % of ceiling: each seed; the mean curve")
        reached: dict[str, int | None] = {}
        for name in names:
            started = time.perf_counter()
            curves = [simulate(name, pool_x, pool_y, test_x, test_y, batch, args.budget, seed)
                      for seed in range(args.seeds)]
            cells = []
            for n in (n for n in CHECKPOINTS if n <= args.budget):
                values = [at(c, n) for c in curves]
                cells.append(f"{np.mean(values):.3f}±{np.std(values):.3f}".rjust(14))
            reach = [labels_to_reach(c, target) for c in curves]
            reach_text = ", ".join(str(r) if r else f">{args.budget}" for r in reach)
            # One seed's crossing point jumps by hundreds of labels where its curve runs
            # flat near the target; the mean curve's moves much less.
            mean_curve = {n: float(np.mean([c[n] for c in curves])) for n in curves[0]}
            reached[name] = labels_to_reach(mean_curve, target)
            mean_text = str(reached[name]) if reached[name] else f">{args.budget}"
            print(name.ljust(18) + "".join(cells) + f"   {reach_text}; {mean_text}"
                  f"   ({time.perf_counter() - started:.0f} s)", flush=True)
        if "random" in reached:
            baseline = reached["random"] or args.budget
            at_most = "" if reached["random"] else "at most "
            print("labels needed (mean curve) / random's: " + ", ".join(
                f"{name} {at_most}{(reached[name] or args.budget) / baseline:.2f}"
                for name in names if name != "random"))
    print("\nreproduce: python bench/label_efficiency.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
