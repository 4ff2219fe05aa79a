"""How well each ranking finds flipped labels, on Fashion-MNIST, with server/quality/mislabels.

The first 10,000 training images, the project's default backbone at 64x64 through the
learner's own cache (ids as in bench/label_efficiency.py, so the cache is shared); 5 % of the
labels flipped at random (seeded) to a different class chosen uniformly. For every ranking:
average precision against the flipped set, precision and recall among the top 5 %, and its
seconds (its k-fold included). Then what cleanlab's find_label_issues flags, with its
defaults, on the default ranking's probabilities and on the round head's.

    python bench/mislabels.py [--labeled 10000] [--noise 0.05] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_efficiency import embed_fashion

from server.learner import head as round_head
from server.quality import mislabels


def flip_labels(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A copy with `fraction` of the labels moved to another class, uniformly at random."""
    rng = np.random.default_rng(seed)
    classes = int(labels.max()) + 1
    flipped = rng.choice(len(labels), int(round(fraction * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, len(flipped))) % classes
    return noisy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labeled", type=int, default=10_000)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    features, truth, _, _, _ = embed_fashion(64, args.labeled)
    noisy = flip_labels(truth, args.noise, args.seed)
    wrong = noisy != truth
    top = int(round(args.noise * len(noisy)))
    print(
        f"{len(noisy)} labeled images, {wrong.sum()} labels flipped (seed {args.seed}); "
        f"top {top} = {args.noise:.0%} inspected\n"
    )
    print(f"{'ranking':58}{'AP':>7}{'P@top':>8}{'R@top':>8}{'seconds':>9}")

    def show(name: str, issues: mislabels.LabelIssues, seconds: float | None = None) -> None:
        head = issues.order()[:top]
        ap = average_precision_score(wrong, issues.score)
        print(
            f"{name:58}{ap:7.3f}{wrong[head].mean():8.3f}{wrong[head].sum() / wrong.sum():8.3f}"
            f"{issues.seconds if seconds is None else seconds:9.1f}",
            flush=True,
        )

    def run(name: str, **kwargs) -> mislabels.LabelIssues:
        issues = mislabels.find_mislabels(features, noisy, seed=args.seed, **kwargs)
        show(name, issues)
        return issues

    round_c = round_head.C
    anchor = run(
        f"self_confidence, round head C={round_c}, 5 folds", ranking="self_confidence", c=round_c
    )
    run(f"labelfix (in-sample), C={round_c}", ranking="labelfix", c=round_c)
    for c in (0.001, mislabels.C):
        run(f"self_confidence, C={c}, 5 folds", ranking="self_confidence", c=c)
    run(f"self_confidence, C={mislabels.C}, 10 folds", ranking="self_confidence", folds=10)
    run(f"normalized_margin, C={mislabels.C}", ranking="normalized_margin")
    run(f"confidence_weighted_entropy, C={mislabels.C}", ranking="confidence_weighted_entropy")
    run(f"labelfix (in-sample), C={mislabels.C}", ranking="labelfix")

    started = time.perf_counter()
    codes = np.searchsorted(np.unique(noisy), noisy)
    ensemble_cs = (0.003, 0.01, 0.03, 0.1)
    ensemble = np.mean(
        [
            mislabels.out_of_fold_probabilities(features, codes, seed=args.seed, c=c)
            for c in ensemble_cs
        ],
        axis=0,
    )
    issues = mislabels.find_mislabels(features, noisy, "self_confidence", probs=ensemble)
    show(f"self_confidence, mean of heads C={ensemble_cs}", issues, time.perf_counter() - started)
    for k in (25, 100):
        run(f"knn alone, k={k}", ranking="knn", neighbours=k)
    run(f"knn alone, k={mislabels.NEIGHBOURS}", ranking="knn")
    for k in (25, 100):
        run(f"head_knn, k={k}", ranking="head_knn", neighbours=k)
    default = run(
        f"DEFAULT {mislabels.DEFAULT_RANKING}: {1 - mislabels.NEIGHBOUR_WEIGHT:.1f} "
        f"head C={mislabels.C} + {mislabels.NEIGHBOUR_WEIGHT:.1f} "
        f"knn k={mislabels.NEIGHBOURS}"
    )

    print("\ncleanlab find_label_issues (defaults: prune_by_noise_rate)")
    for name, issues in (
        (f"on the round head's probabilities (C={round_c})", anchor),
        ("on the default ranking's probabilities", default),
    ):
        flagged = issues.flagged
        print(
            f"  {name}: {flagged.sum()} flagged, precision {wrong[flagged].mean():.3f}, "
            f"recall {wrong[flagged].sum() / wrong.sum():.3f}"
        )
    suggested = default.suggested[wrong[default.order()[:top]].nonzero()[0]]
    found = default.order()[:top][wrong[default.order()[:top]]]
    print(
        f"  default ranking: suggested label = true label for "
        f"{np.mean(default.suggested[found] == truth[found]):.3f} of the flipped images "
        f"in its top {top} ({len(suggested)})"
    )
    print("\nreproduce: python bench/mislabels.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
