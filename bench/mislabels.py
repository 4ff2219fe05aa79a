"""How well each ranking finds wrong labels, with server/quality/mislabels: on Fashion-MNIST
5 % uniform flips in detail, then the errors teams really make, on two data sets.

Fashion-MNIST: the first --labeled training images, the project's default backbone at 64x64
through the learner's own cache (ids as in bench/label_efficiency.py, so the cache is
shared). First, as before, one seed (--seed) of 5 % of the labels flipped at random to a
different class chosen uniformly: for every ranking and variant, average precision against
the flipped set, precision and recall among the top 5 %, and its seconds (its k-fold
included); then what cleanlab's find_label_issues flags, with its defaults, on the default
ranking's probabilities and on the round head's.

Then, for Fashion-MNIST and for scikit-learn's digits (all 1,797 images; the features are
the 64 raw 8x8 pixels: embedding them through the backbone would mean running it on images
the cache does not hold), each over --seeds seeds (--seed, --seed + 1, ...), every registered
ranking at its product defaults on planted errors:
  (a) uniform: --noise of the labels moved to another class, uniformly (as above);
  (b) class-conditional: 25 % of one class, drawn at random, filed as one other class, a
      fixed confusable pair per seed (PAIRS: Fashion Shirt->T-shirt, Pullover->Coat,
      Boot->Sneaker; digits 4->9, 7->1, 8->3);
  (c) clustered: a tight run of 20-50 images of one class (a random image and its nearest
      neighbours within its class, cosine on the standardised features, as the kNN ranking
      measures them), all filed under one other class drawn at random;
  (d) an annotator who confuses two classes: three simulated annotators label every image,
      two right 95 % of the time with uniform errors, one the same except that 40 % of class
      A (the seed's pair, as in (b)) is answered as class B; Dawid-Skene fitted as
      server/annotators.py fits it (annotator_model.dawid_skene, no gold images here), and
      each annotator's off-diagonal confusion mass, minus the mean of the other annotators',
      ranks the annotators; each off-diagonal cell, minus the other annotators' mean of it,
      ranks the (annotator, A, B) cells; and whether the product's list (the agreement page,
      `activelabel audit`: server/consensus/confused_pairs.py) names that annotator and pair
      first.
For (a) average precision; for (b) and (c) average precision, R@3m (the share of the m
planted images that are among the first 3 x m suspects) and how many of the planted images
cleanlab's find_label_issues flags (on that ranking's probabilities; all it flags after the
slash); for (d) the rank of the bad annotator and of its pair. Means over the seeds, and each
ranking's seconds per run (the k-fold, computed once per run and shared by the rankings
that read it, is counted in each of them). About 7 minutes on two shared cores.

    python bench/mislabels.py [--labeled 10000] [--noise 0.05] [--seed 0] [--seeds 3]
        [--datasets fashion,digits]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fashion import NAMES
from label_efficiency import embed_fashion

from server.consensus import annotator_model
from server.consensus.confused_pairs import confused_pairs
from server.learner import head as round_head
from server.learner.head import Projection
from server.quality import mislabels

# (true class, the class it is filed as), one per seed in turn: pairs people mix up.
PAIRS = {
    "fashion": [(6, 0), (2, 4), (9, 7)],  # Shirt->T-shirt, Pullover->Coat, Boot->Sneaker
    "digits": [(4, 9), (7, 1), (8, 3)],
}
CONDITIONAL_SHARE = 0.25  # (b): of the true class, filed as the other
CLUSTER = (20, 50)  # (c): the run's size, drawn uniformly in this range
ANNOTATOR_ACCURACY = 0.95  # (d)
CONFUSED_SHARE = 0.40  # (d): of class A, the bad annotator answers B


def flip_labels(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A copy with `fraction` of the labels moved to another class, uniformly at random."""
    rng = np.random.default_rng(seed)
    classes = int(labels.max()) + 1
    flipped = rng.choice(len(labels), int(round(fraction * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, len(flipped))) % classes
    return noisy


def today(features: np.ndarray, truth: np.ndarray, args) -> None:
    """Uniform flips, one seed, every ranking and variant (the output as it was)."""
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
        f"DEFAULT {mislabels.DEFAULT_RANKING}: head_knn twice, groups, pair noise"
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


def planted_uniform(truth, seed, noise):
    """(a): (the labels, what was planted)."""
    return flip_labels(truth, noise, seed), f"{noise:.0%} uniform"


def planted_conditional(truth, seed, names, pair):
    """(b): CONDITIONAL_SHARE of class `pair[0]`, drawn at random, filed as `pair[1]`."""
    source, target = pair
    rng = np.random.default_rng([seed, 2])
    members = np.flatnonzero(truth == source)
    moved = rng.choice(members, int(round(CONDITIONAL_SHARE * len(members))), replace=False)
    noisy = truth.copy()
    noisy[moved] = target
    return noisy, f"{names[source]}->{names[target]}"


def planted_cluster(truth, seed, names, unit):
    """(c): a random image and its nearest same-class neighbours (`unit`: rows of unit length),
    filed under another class drawn at random."""
    rng = np.random.default_rng([seed, 3])
    classes = int(truth.max()) + 1
    size = int(rng.integers(CLUSTER[0], CLUSTER[1] + 1))
    centre = int(rng.integers(len(truth)))
    members = np.flatnonzero(truth == truth[centre])
    run = members[np.argsort(-(unit[members] @ unit[centre]), kind="stable")[:size]]
    target = int((truth[centre] + rng.integers(1, classes)) % classes)
    noisy = truth.copy()
    noisy[run] = target
    return noisy, f"{len(run)} {names[truth[centre]]}->{names[target]}"


def rank_rankings(features, noisy, planted, seed, names):
    """{ranking: (AP, R@3m, planted flagged, all flagged, seconds)} for every registered
    ranking at its defaults; the k-fold computed once, its seconds added to those that read
    it."""
    started = time.perf_counter()
    codes = np.searchsorted(np.unique(noisy), noisy)
    oof = mislabels.out_of_fold_probabilities(features, codes, seed=seed)
    oof_seconds = time.perf_counter() - started
    m = int(planted.sum())
    results = {}
    original = mislabels.Evidence.out_of_fold
    for name in mislabels.RANKINGS:
        with mock.patch.object(
            mislabels.Evidence, "out_of_fold", autospec=True, side_effect=original
        ) as read:
            issues = mislabels.find_mislabels(features, noisy, name, seed=seed, probs=oof)
        head = issues.order()[: 3 * m]
        results[name] = (
            average_precision_score(planted, issues.score),
            planted[head].sum() / m,
            int((issues.flagged & planted).sum()),
            int(issues.flagged.sum()),
            issues.seconds + (oof_seconds if read.called else 0.0),
            first_finding(issues, planted, names),
        )
    return results


def first_finding(issues, planted, names) -> str:
    """The first group the quality page would show, and how many planted images it holds."""
    if not issues.groups:
        return "no finding"
    first = issues.groups[0]
    inside = int(planted[first.positions].sum())
    return (f"{len(first.positions)} filed as {names[first.given]} look like"
            f" {names[first.looks_like]}"
            f" ({first.kind}), {inside} of the {int(planted.sum())} planted")


def confused_annotator(truth, seed, pair):
    """(d): (rank of the bad annotator of 3, rank of its (A, B) cell among every annotator's
    off-diagonal cells, among its own, its fitted P(B | A), the others' mean, the
    Dawid-Skene consensus labels that are wrong, seconds)."""
    rng = np.random.default_rng([seed, 4])
    source, target = pair
    n, classes = len(truth), int(truth.max()) + 1
    people = ["ann-1", "ann-2", "ann-3"]
    bad = int(rng.integers(len(people)))
    triples = []
    for who, person in enumerate(people):
        said = truth.copy()
        wrong = rng.random(n) >= ANNOTATOR_ACCURACY
        said[wrong] = (truth[wrong] + rng.integers(1, classes, wrong.sum())) % classes
        if who == bad:
            said[(truth == source) & (rng.random(n) < CONFUSED_SHARE)] = target
        triples += [(image, person, int(label)) for image, label in enumerate(said)]
    started = time.perf_counter()
    fitted = annotator_model.dawid_skene(triples, classes, gold={})
    seconds = time.perf_counter() - started
    confusions = fitted.confusions
    order = [fitted.annotators.index(p) for p in people]
    confusions = confusions[order]
    others = (confusions.sum(axis=0) - confusions) / (len(people) - 1)
    excess = confusions - others
    off = ~np.eye(classes, dtype=bool)
    mass = excess[:, off].sum(axis=1)
    annotator_rank = 1 + int((mass > mass[bad]).sum())
    cell = excess[bad, source, target]
    cells = excess[:, off]
    pair_rank = 1 + int((cells > cell).sum())
    own_rank = 1 + int((cells[bad] > cell).sum())
    position = {item: i for i, item in enumerate(fitted.items)}
    consensus = fitted.labels[[position[i] for i in range(n)]]
    # What the agreement page and `activelabel audit` list, first row: the product's rule.
    listed = confused_pairs({person: confusions[i] for i, person in enumerate(people)})
    first = (listed[0].annotator, listed[0].true, listed[0].answered) if listed else None
    return (
        annotator_rank,
        pair_rank,
        own_rank,
        float(confusions[bad, source, target]),
        float(others[bad, source, target]),
        int((consensus != truth).sum()),
        seconds,
        first == (people[bad], source, target),
        len(listed),
    )


def cases(title: str, key: str, features, truth, names, args) -> None:
    """The table of (a)-(d) for one data set, means over the seeds."""
    features = np.asarray(features, dtype=np.float32)
    unit = Projection.fit(features)(features)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True) + 1e-12
    seeds = list(range(args.seed, args.seed + args.seeds))
    per_case: dict[str, list[dict]] = {"a": [], "b": [], "c": []}
    described: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    planted_counts: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    annotators = []
    started = time.perf_counter()
    for seed in seeds:
        pair = PAIRS[key][seed % len(PAIRS[key])]
        for case, (noisy, what) in (
            ("a", planted_uniform(truth, seed, args.noise)),
            ("b", planted_conditional(truth, seed, names, pair)),
            ("c", planted_cluster(truth, seed, names, unit)),
        ):
            planted = noisy != truth
            per_case[case].append(rank_rankings(features, noisy, planted, seed, names))
            described[case].append(what)
            planted_counts[case].append(int(planted.sum()))
        annotators.append(confused_annotator(truth, seed, pair))
    print(
        f"\n{title}: {len(truth):,} labeled images, mean of {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}), {time.perf_counter() - started:.0f} s in all"
    )
    for case, text in (("a", "uniform"), ("b", "class-conditional"), ("c", "clustered")):
        print(
            f"  ({case}) {text}, planted per seed: "
            + "; ".join(
                f"{w} ({m})" for w, m in zip(described[case], planted_counts[case], strict=True)
            )
        )
    print(
        f"\n{'ranking':30}{'(a) AP':>8}{'(b) AP':>8}{'R@3m':>7}{'flagged':>12}"
        f"{'(c) AP':>8}{'R@3m':>7}{'flagged':>12}{'s/run':>7}"
    )
    for name in mislabels.RANKINGS:
        mean = {
            (case, column): float(np.mean([run[name][column] for run in runs]))
            for case, runs in per_case.items()
            for column in range(5)
        }
        flags = {case: f"{mean[case, 2]:.0f}/{mean[case, 3]:.0f}" for case in ("b", "c")}
        label = f"{name}{' (DEFAULT)' if name == mislabels.DEFAULT_RANKING else ''}"
        seconds = np.mean([mean[case, 4] for case in per_case])
        print(
            f"{label:30}{mean['a', 0]:8.3f}{mean['b', 0]:8.3f}{mean['b', 1]:7.3f}"
            f"{flags['b']:>12}{mean['c', 0]:8.3f}{mean['c', 1]:7.3f}{flags['c']:>12}"
            f"{seconds:7.1f}",
            flush=True,
        )
    default = mislabels.DEFAULT_RANKING
    for case in ("b", "c"):
        print(
            f"  {default} by seed, ({case}) AP / R@3m: "
            + "; ".join(f"{run[default][0]:.3f}/{run[default][1]:.3f}" for run in per_case[case])
        )
        for seed, run in zip(seeds, per_case[case], strict=True):
            print(f"    seed {seed}, the quality page's first finding: {run[default][5]}")
    print(
        "\n(d) one of three annotators answers 40 % of class A as B (the seed's pair), "
        "Dawid-Skene, no gold"
    )
    print(
        f"{'seed':>6}{'pair':>18}{'annotator rank':>16}{'cell rank':>11}{'own':>6}"
        f"{'P(B|A) bad':>12}{'others':>8}{'consensus wrong':>17}{'seconds':>9}"
    )
    for seed, row in zip(seeds, annotators, strict=True):
        source, target = PAIRS[key][seed % len(PAIRS[key])]
        print(
            f"{seed:>6}{f'{names[source]}->{names[target]}':>18}{f'{row[0]} of 3':>16}"
            f"{f'{row[1]} of {3 * len(names) * (len(names) - 1)}':>11}{row[2]:>6}"
            f"{row[3]:12.3f}{row[4]:8.3f}{row[5]:17d}{row[6]:9.1f}"
        )
    rows = np.array(annotators, dtype=float)
    print(
        f"{'mean':>6}{'':>18}{rows[:, 0].mean():16.2f}{rows[:, 1].mean():11.2f}"
        f"{rows[:, 2].mean():6.2f}{rows[:, 3].mean():12.3f}{rows[:, 4].mean():8.3f}"
        f"{rows[:, 5].mean():17.1f}{rows[:, 6].mean():9.1f}"
    )
    print(
        f"  bad annotator first in {int((rows[:, 0] == 1).sum())} of {len(seeds)} seeds, "
        f"its pair first in {int((rows[:, 1] == 1).sum())}; the agreement page's list"
        f" (consensus/confused_pairs.py) names that annotator and pair first in"
        f" {int(rows[:, 7].sum())} of {len(seeds)} (rows listed: "
        f"{', '.join(str(int(v)) for v in rows[:, 8])})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labeled", type=int, default=10_000)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default="fashion,digits")
    args = parser.parse_args()
    datasets = args.datasets.split(",")
    if "fashion" in datasets:
        features, truth, _, _, _ = embed_fashion(64, args.labeled)
        today(features, truth, args)
        cases("Fashion-MNIST (64x64 embeddings)", "fashion", features, truth, NAMES, args)
    if "digits" in datasets:
        from sklearn.datasets import load_digits

        digits = load_digits()
        cases(
            "digits (8x8 pixels as features)",
            "digits",
            digits.data,
            digits.target,
            [str(d) for d in range(10)],
            args,
        )
    print("\nreproduce: python bench/mislabels.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
