"""Does a consensus weighted by per-annotator confusions (Dawid-Skene) beat a plain majority?

Truth: Fashion-MNIST's labels (the first --images of --split). Simulated annotators with the
accuracies of --annotators each label every image (3 annotators = 3 votes per image); when
wrong, they answer by one of two noise models:

- uniform: any other class, uniformly.
- confusable: mostly a class that looks alike. Fashion-MNIST's classes fall into look-alike
  groups by what they are, no model needed: tops (T-shirt, Pullover, Dress, Coat, Shirt),
  footwear (Sandal, Sneaker, Boot), and Trouser and Bag on their own. A wrong answer picks
  another class of the same group with weight 10 and any other class with weight 1, so a
  Shirt mistaken is a T-shirt, Pullover, Dress or Coat 89 % of the time (4 x 10 of 45), and
  a Trouser or Bag mistaken is any other class, uniformly. Every annotator shares these
  look-alikes, so their mistakes collide, which is what makes a majority wrong.

Prints per noise model how often the consensus equals the truth, for the plain majority (ties
broken at random, seeded) and for the Dawid-Skene label, mean ± sd over --seeds; and each
annotator's true accuracy (set, and realized on these images) beside the estimated one.

    python bench/consensus.py [--annotators 0.95,0.85,0.70] [--images 10000] [--split test]
                              [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fashion import NAMES, load

from server.consensus.annotator_model import dawid_skene, index_votes

OUT = Path(__file__).resolve().parent / "out"
LOOK_ALIKE_GROUPS = [
    ["T-shirt", "Pullover", "Dress", "Coat", "Shirt"],
    ["Sandal", "Sneaker", "Boot"],
    ["Trouser"],
    ["Bag"],
]
SAME_GROUP_WEIGHT = 10.0


def wrong_answer_distribution(noise: str) -> np.ndarray:
    """(K, K): row k is the distribution of a wrong answer when the truth is k (zero diagonal)."""
    k = len(NAMES)
    weights = np.ones((k, k))
    if noise == "confusable":
        group_of = {name: g for g, group in enumerate(LOOK_ALIKE_GROUPS) for name in group}
        groups = np.array([group_of[name] for name in NAMES])
        weights[groups[:, None] == groups[None, :]] = SAME_GROUP_WEIGHT
    np.fill_diagonal(weights, 0.0)
    return weights / weights.sum(axis=1, keepdims=True)


def simulate_votes(truth, accuracies, wrong, rng) -> list[tuple[int, str, int]]:
    votes = []
    cumulative = wrong.cumsum(axis=1)
    for number, accuracy in enumerate(accuracies):
        right = rng.random(len(truth)) < accuracy
        draws = rng.random(len(truth))[:, None]
        mistakes = np.minimum((draws > cumulative[truth]).sum(axis=1), len(NAMES) - 1)
        said = np.where(right, truth, mistakes)
        name = f"annotator{number + 1}"
        votes += [(item, name, label) for item, label in enumerate(said.tolist())]
    return votes


def run(noise, truth, accuracies, seeds) -> dict[str, list]:
    wrong = wrong_answer_distribution(noise)
    results: dict[str, list] = {
        "majority": [],
        "weighted": [],
        "realized": [],
        "estimated": [],
        "seconds": [],
    }
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        votes = simulate_votes(truth, accuracies, wrong, rng)
        started = time.perf_counter()
        indexed = index_votes(votes, len(NAMES))
        fitted = dawid_skene(indexed, len(NAMES))
        results["seconds"].append(time.perf_counter() - started)
        item_truth = truth[np.array(indexed.items)]
        counts = indexed.label_counts()
        # Random tie-break: integer counts plus noise in [0, 0.5) pick uniformly among the tied.
        majority = (counts + 0.5 * rng.random(counts.shape)).argmax(axis=1)
        results["majority"].append((majority == item_truth).mean())
        results["weighted"].append((fitted.labels == item_truth).mean())
        said = indexed.label.reshape(len(accuracies), -1)  # votes were made annotator by annotator
        results["realized"].append((said == truth).mean(axis=1))
        results["estimated"].append(
            [fitted.accuracy_by_annotator()[f"annotator{n + 1}"] for n in range(len(accuracies))]
        )
    return results


def spread(values) -> str:
    values = np.asarray(values)
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--annotators",
        default="0.95,0.85,0.70",
        help="accuracy of each simulated annotator, comma-separated",
    )
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--split", choices=["test", "train"], default="test")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    accuracies = [float(value) for value in args.annotators.split(",")]
    _, labels = load(args.split)
    truth = labels[: args.images]

    lines = [
        f"Fashion-MNIST {args.split}, {len(truth)} images, {len(accuracies)} annotators "
        f"({args.annotators}), {len(accuracies)} votes per image, {args.seeds} seeds"
    ]
    for noise in ("uniform", "confusable"):
        results = run(noise, truth, accuracies, args.seeds)
        lines += [
            "",
            f"noise: {noise}",
            f"  consensus = truth, plain majority (random ties): {spread(results['majority'])}",
            f"  consensus = truth, Dawid-Skene weighted:         {spread(results['weighted'])}",
            f"  weighted - majority:                             "
            f"{spread(np.subtract(results['weighted'], results['majority']))}",
            f"  Dawid-Skene fit (index + EM): {spread(results['seconds'])} s",
            "  annotator    set    realized          estimated",
        ]
        realized, estimated = np.array(results["realized"]), np.array(results["estimated"])
        for number, accuracy in enumerate(accuracies):
            lines.append(
                f"  annotator{number + 1}  {accuracy:.2f}   {spread(realized[:, number])}"
                f"   {spread(estimated[:, number])}"
            )
    lines += ["", "reproduce: python bench/consensus.py " + " ".join(sys.argv[1:])]
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "consensus.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
