"""Does a learning curve fitted on a few labels predict the accuracy more labels reach?

Fashion-MNIST: pool = the first 10,000 training images, test = the 10,000 test images, the
project's default backbone at 64x64 through the learner's cache (ids as in
bench/label_efficiency.py). For each seed: draw 1,000 labels at random from the pool, fit
server/quality/sample_size's curve to them alone (5-fold cross-validation inside the 1,000:
heads on 5-100 % of each fold's 800 training labels, scored on the fold's 200), then compare
its prediction at 2,000 and 5,000 labels with the accuracy a head trained on 2,000 and 5,000
random pool labels (the 1,000 among them) actually reaches on the 10,000 test images.
The curve predicts cross-validated accuracy; the head at 1,000 labels is scored both ways to
show how far the two are apart.

    python bench/sample_size.py [--seeds 3] [--labels 1000] [--targets 2000,5000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_efficiency import embed_fashion

from server.learner.head import HeadModel, cross_validate
from server.quality import sample_size


def test_accuracy(pool_x, pool_y, chosen, test_x, test_y, seed) -> float:
    head = HeadModel.fit(pool_x[chosen], pool_y[chosen], unlabeled=pool_x, seed=seed)
    return float(np.mean(head.predict(test_x) == test_y))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--targets", default="2000,5000")
    parser.add_argument("--pool", type=int, default=10_000)
    args = parser.parse_args()
    targets = [int(t) for t in args.targets.split(",")]
    pool_x, pool_y, test_x, test_y, _ = embed_fashion(64, args.pool)
    errors: dict[str, list[float]] = {m: [] for m in sample_size.MODELS}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(pool_y))  # the first k of it: nested random samples
        few = order[: args.labels]
        cv_few, _ = cross_validate(pool_x[few], pool_y[few], pool_x, seed=seed)
        actual = {
            n: test_accuracy(pool_x, pool_y, order[:n], test_x, test_y, seed)
            for n in [args.labels, *targets]
        }
        print(
            f"\nseed {seed}: {args.labels} random labels; head at {args.labels}: "
            f"cross-validated {cv_few:.3f}, on the test set {actual[args.labels]:.3f}"
        )
        started = time.perf_counter()
        points = sample_size.measure_points(pool_x[few], pool_y[few], seed=seed, unlabeled=pool_x)
        measured = time.perf_counter() - started
        print(
            "  points (labels: mean ± sd over folds x repeats): "
            + ", ".join(f"{p.labels}: {p.mean:.3f}±{p.sd:.3f}" for p in points)
            + f"   ({measured:.0f} s)"
        )
        for model in sample_size.MODELS:
            started = time.perf_counter()
            curve = sample_size.fit_curve(points, model, seed=seed)
            a, b, c = curve.params
            print(
                f"  {model:19} a={a:.3f} b={b:.3g} c={c:.3g}  "
                f"({time.perf_counter() - started:.1f} s with {len(curve.bootstrap_params)} "
                f"bootstrap fits)"
            )
            for n in targets:
                predicted = float(curve.predict(n))
                low, high = (float(v) for v in curve.band(n))
                error = predicted - actual[n]
                errors[model].append(error)
                print(
                    f"    at {n:>5} labels: predicted {predicted:.3f} [{low:.3f}, {high:.3f}]"
                    f"  actual {actual[n]:.3f}  error {error:+.3f}"
                    f"  {'inside' if low <= actual[n] <= high else 'outside'} the band"
                )
            for target in (0.82, 0.85, 0.88):
                needed = curve.labels_needed(target)
                fewest, most = curve.labels_needed_range(target)
                print(
                    f"    labels for {target:.0%}: "
                    + ("never (above the asymptote)" if needed is None else f"{needed}")
                    + f"  [{fewest or 'never'}, {most or 'never'}]"
                )
    print("\nmean absolute error of the prediction, over seeds and targets:")
    for model, values in errors.items():
        print(f"  {model:19} {np.mean(np.abs(values)):.3f} (mean signed {np.mean(values):+.3f})")
    print("\nreproduce: python bench/sample_size.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
