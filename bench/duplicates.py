"""How well server/quality/duplicates finds planted near-copies, and how long it takes.

Accuracy: the first 5,000 Fashion-MNIST training images as PNG files, plus 200 near-copies of
200 of them (seeded): each copy gets one or more of a 1-2 px shift (the uncovered edge
filled with black, what shifted out lost), a brightness change of 5-10 % either way (clipped
at 255), and JPEG at quality 70 (saved as .jpg); every copy is written as a file and the
detector reads the files. A found pair counts as correct only if it is a planted
(original, copy) pair; unplanted pairs are counted and listed apart, and a contact sheet of
them (original | other | difference x2) is saved to bench/out/duplicates-unplanted.png.
First each signal alone on all 13.5 million pairs (threshold sweeps), then the detector's
candidates and its aligned correlation (sweep; the default marked).

Scale (--scale N, 0 to skip): all 70,000 Fashion-MNIST images (train + test) plus N - 70,000
copies made the same way (so 30,000 copies for 100,000: the set the server would see if a
third of the files were near-copies). Hashing from files and the pair search are timed
apart; peak memory is the process's maximum resident size so far.

    python bench/duplicates.py [--images 5000] [--copies 200] [--seed 0] [--scale 100000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fashion import load, write_pngs

from server.learner import Learner, LearnerConfig
from server.quality import duplicates

OUT = Path(__file__).resolve().parent / "out"


def peak_mb() -> float:
    """This process's peak resident memory. Linux keeps getrusage's maxrss across exec (a
    spawned child would report its parent's peak), so the kernel's VmHWM comes first."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def translate(pixels: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift by whole pixels; the uncovered edge is black, what moves out is lost."""
    out = np.zeros_like(pixels)
    h, w = pixels.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = pixels[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def write_copies(images: np.ndarray, sources: np.ndarray, folder: Path, seed: int) -> tuple:
    """One near-copy of images[s] per s in sources, as files; (paths, descriptions)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, kinds = [], []
    for j, source in enumerate(sources):
        pixels = images[source].astype(np.float32)
        shift, bright, jpeg = rng.random(3) < 0.5
        if not (shift or bright or jpeg):
            shift, bright, jpeg = np.eye(3, dtype=bool)[rng.integers(3)]
        kind = []
        if shift:
            dy, dx = 0, 0
            while dy == 0 and dx == 0:
                dy, dx = (int(v) for v in rng.integers(-2, 3, 2))
            pixels = translate(pixels, dy, dx)
            kind.append(f"shift {dy:+d},{dx:+d}")
        if bright:
            factor = 1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.10)
            pixels = np.clip(pixels * factor, 0, 255)
            kind.append(f"brightness x{factor:.2f}")
        image = Image.fromarray(np.round(pixels).astype(np.uint8), mode="L")
        path = folder / f"copy-{j:05d}.{'jpg' if jpeg else 'png'}"
        if jpeg:
            image.save(path, quality=70)
            kind.append("jpeg 70")
        else:
            image.save(path)
        paths.append(str(path))
        kinds.append(" + ".join(kind))
    return paths, kinds


def precision_recall(found: np.ndarray, is_planted: np.ndarray, planted: int) -> str:
    hits = int(is_planted[found].sum())
    count = int(found.sum())
    precision = hits / count if count else float("nan")
    return (
        f"found {count:>8}  planted {hits:>4}  precision {precision:6.3f}  "
        f"recall {hits / planted:6.3f}"
    )


def single_signals(prints, embeddings: np.ndarray, planted_pairs: set, planted: int) -> None:
    """Each signal alone, thresholded on every pair."""
    n = len(prints)
    first, second = np.triu_indices(n, 1)
    key = first.astype(np.int64) * n + second
    planted_keys = np.array([a * n + b for a, b in planted_pairs])
    is_planted = np.isin(key, planted_keys)
    print(f"\neach signal alone, on all {len(first):,} pairs")
    for name in duplicates.HASHES:
        values = getattr(prints, name)
        distance = duplicates.hamming(values[first], values[second])
        for limit in (0, 4, 8, 12):
            print(
                f"  {name} distance <= {limit:<2}        "
                + precision_recall(distance <= limit, is_planted, planted)
            )
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    for name, views in (
        ("centred thumbnail cosine", prints.thumbs.transpose(1, 0, 2)),
        ("embedding cosine", unit[None]),
    ):
        # the better of the two centrings for thumbnails; 5,200 x 5,200 floats: 108 MB
        cosine = np.max([(v @ v.T)[first, second] for v in views], axis=0)
        for limit in (0.95, 0.98, 0.99):
            print(
                f"  {name} >= {limit:<5} ".ljust(31)
                + precision_recall(cosine >= limit, is_planted, planted)
            )


def contact_sheet(prints, pairs: list, path: Path) -> None:
    tiles = []
    for pair in pairs[:24]:
        a = prints.canvases[pair.first].astype(int)
        b = prints.canvases[pair.second].astype(int)
        difference = np.clip(np.abs(a - b) * 2, 0, 255)
        gap = np.full((a.shape[0], 2), 128)
        tiles.append(np.concatenate([a, gap, b, gap, difference], axis=1))
        tiles.append(np.full((2, tiles[-1].shape[1]), 128))
    if tiles:
        sheet = np.concatenate(tiles).astype(np.uint8)
        Image.fromarray(sheet).resize(
            (sheet.shape[1] * 4, sheet.shape[0] * 4), Image.Resampling.NEAREST
        ).save(path)


def accuracy(args) -> None:
    train, labels = load("train")
    originals = write_pngs(train[: args.images], OUT / "fashion" / "train", "train")
    rng = np.random.default_rng(args.seed)
    sources = np.sort(rng.choice(args.images, args.copies, replace=False))
    folder = OUT / "duplicates" / f"copies-{args.images}-{args.seed}"
    copies, kinds = write_copies(train, sources, folder, args.seed)
    paths = originals + copies
    n = len(paths)
    planted_pairs = {(int(s), args.images + j) for j, s in enumerate(sources)}
    print(
        f"{args.images} Fashion-MNIST images + {args.copies} planted near-copies "
        f"(seed {args.seed}): "
        + ", ".join(
            f"{sum(k in kind for kind in kinds)} {k}" for k in ("shift", "brightness", "jpeg")
        )
    )

    # Embeddings of the originals from the shared bench cache (train i -> id i + 1); of the
    # copies from a cache of their own, since they change with the seed.
    config = LearnerConfig(input_size=64, workers=1)
    shared = Learner(config, OUT / "cache")
    shared.embed(np.arange(1, args.images + 1), originals)
    own = Learner(config, folder / "cache")
    own.embed(np.arange(len(copies)), copies)
    embeddings = np.concatenate(
        [shared.embeddings(np.arange(1, args.images + 1)), own.embeddings(np.arange(len(copies)))]
    )

    prints = duplicates.fingerprints(paths)
    print(
        f"fingerprints: {prints.seconds:.1f} s for {n} files "
        f"({prints.seconds / n * 1000:.2f} ms each)"
    )
    single_signals(prints, embeddings, planted_pairs, args.copies)

    rule = duplicates.DuplicateRule()
    started = time.perf_counter()
    found = duplicates.score_candidates(prints, rule, embeddings)
    seconds = time.perf_counter() - started
    is_planted = np.array([(int(a), int(b)) in planted_pairs for a, b in found.pairs])
    print(
        f"\ndetector: {len(found.pairs):,} candidates ({rule.neighbours} nearest by centred "
        f"thumbnail cosine, each centring, >= {rule.min_thumb_cosine}), holding "
        f"{is_planted.sum()} of {args.copies} planted pairs; aligned correlation "
        f"(shifts <= {rule.max_shift} px, "
        f"{duplicates.BLUR}x{duplicates.BLUR} blur) in {seconds:.1f} s"
    )
    print(
        f"  planted pairs' aligned correlation: min {found.aligned[is_planted].min():.4f}, "
        f"1st percentile {np.quantile(found.aligned[is_planted], 0.01):.4f}"
    )
    for limit in (0.99, 0.995, 0.996, 0.997, 0.998, 0.999):
        mark = "  <- default" if limit == rule.min_aligned else ""
        print(
            f"  aligned >= {limit:<6}  "
            + precision_recall(found.aligned >= limit, is_planted, args.copies)
            + mark
        )
    print(f"  same candidates, aligned >= {rule.min_aligned} and also:")
    for name, limit in (("phash", 12), ("whash", 8)):
        keep = (found.aligned >= rule.min_aligned) & (found.hashes[name] <= limit)
        print(
            f"    {name} <= {limit:<3}          " + precision_recall(keep, is_planted, args.copies)
        )
    keep = (found.aligned >= rule.min_aligned) & (found.embedding_cosine >= 0.95)
    print("    embedding >= 0.95       " + precision_recall(keep, is_planted, args.copies))

    report = duplicates.find_duplicates(prints, rule, embeddings)
    unplanted = [p for p in report.pairs if (p.first, p.second) not in planted_pairs]
    missed = [
        (s, args.images + j)
        for j, s in enumerate(sources)
        if not any((p.first, p.second) == (s, args.images + j) for p in report.pairs)
    ]
    print(
        f"\ndefault rule: {len(report.pairs)} pairs in {len(report.groups)} groups "
        f"({report.seconds:.1f} s); {len(unplanted)} unplanted pairs:"
    )
    for pair in unplanted:
        names = [
            f"{pair.first} ({labels[pair.first] if pair.first < args.images else 'copy'})",
            f"{pair.second} ({labels[pair.second] if pair.second < args.images else 'copy'})",
        ]
        print(
            f"  {names[0]} ~ {names[1]}: aligned {pair.aligned:.4f}, thumb "
            f"{pair.thumb_cosine:.3f}, phash {pair.phash}, dhash {pair.dhash}, whash "
            f"{pair.whash}, embedding {pair.embedding_cosine:.3f}"
        )
    for first, second in missed:
        print(f"  missed planted {first} -> copy {second}: {kinds[second - args.images]}")
    contact_sheet(prints, unplanted, OUT / "duplicates-unplanted.png")
    print(f"peak memory so far: {peak_mb():.0f} MB")


def scale(args) -> None:
    train, _ = load("train")
    test, _ = load("test")
    everything = np.concatenate([train, test])
    paths = write_pngs(train, OUT / "fashion" / "train", "train")
    paths += write_pngs(test, OUT / "fashion" / "test", "test")
    extra = args.scale - len(paths)
    rng = np.random.default_rng(args.seed + 1)
    sources = np.sort(rng.choice(len(everything), extra, replace=False))
    copies, _ = write_copies(
        everything, sources, OUT / "duplicates" / f"scale-{args.scale}", args.seed + 1
    )
    paths += copies
    planted_pairs = {(int(s), len(everything) + j) for j, s in enumerate(sources)}
    print(
        f"\nscale: {len(paths):,} files ({len(everything):,} Fashion-MNIST + {extra:,} "
        f"near-copies), {args.workers} worker(s) fingerprinting"
    )
    prints = duplicates.fingerprints(paths, workers=args.workers)
    print(
        f"  fingerprints from files: {prints.seconds:.0f} s "
        f"({prints.seconds / len(paths) * 1000:.2f} ms a file); peak {peak_mb():.0f} MB"
    )
    report = duplicates.find_duplicates(prints)
    hits = sum((p.first, p.second) in planted_pairs for p in report.pairs)
    print(
        f"  pair search + verification: {report.seconds:.0f} s, {report.candidates:,} "
        f"candidates; peak {peak_mb():.0f} MB"
    )
    print(
        f"  found {len(report.pairs):,} pairs in {len(report.groups):,} groups: "
        f"{hits:,} of {extra:,} planted (recall {hits / extra:.3f}), "
        f"{len(report.pairs) - hits:,} unplanted (precision {hits / len(report.pairs):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=100_000, help="0: skip the scale run")
    parser.add_argument("--workers", type=int, default=1, help="processes fingerprinting")
    parser.add_argument("--scale-only", action="store_true")
    args = parser.parse_args()
    print(
        f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(shared: timings vary with what else runs)"
    )
    if not args.scale_only:
        accuracy(args)
    if args.scale:
        # In a process of its own, so its peak memory is the detector's alone, not the
        # accuracy run's all-pairs analysis.
        child = multiprocessing.get_context("spawn").Process(target=scale, args=(args,))
        child.start()
        child.join()
    print("\nreproduce: python bench/duplicates.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
