"""Which offline backbone, at which input size, per device: linear-probe accuracy on
Fashion-MNIST against the embedding pass's speed, for every packaged backbone (catalog.PACKAGED,
built as timm's tf_efficientnet_liteN with TensorFlow's "SAME" padding) and, for comparison,
timm's efficientnet_lite0 (symmetric padding, ImageNet mean/std) holding the same lite0 weights
mapped by position: the network efficientnet_lite0 was built as before.

Accuracy: the first --train training images and the first --test test images (28x28 PNGs on
disk), embedded through the learner's own pipeline (Learner.embed: its transforms, batches,
loader and, on CUDA, mixed precision); the product's head (HeadModel, with the label-free
Projection fitted on train + test features, as a round fits it on labeled + pool) trained on
the training features; accuracy and balanced accuracy on the test images.

Speed: images/s of Learner.embed into an empty cache, files on disk to features, torch threads
left as the learner leaves them, the backbone already built. When this run embedded every
image itself, that call is the one timed ("all"); when the embeddings were cached from an
earlier run, a separate embed of --timing images into a fresh temporary cache is ("N new").
Either follows one warm-up batch at that size. `embed s`: the --train + --test images at
that rate.

Embeddings are cached under bench/out/backbones-cache/<device> (ids fixed per image: train i
-> i + 1, test j -> 60,001 + j), so a rerun only re-times. The defaults were cut from 5,000 /
2,000 images to 3,000 / 1,000: on 2 quiet cores the bare 224 px forward runs at 17-27
images/s (lite2-lite0), 5,000 / 2,000 images at 64, 128 and 224 px would take about 27
minutes, these about 15 (224 px is 80 % of it; --sizes 64,128 takes about 3). With the cores
shared (load 4-7) the first run took 38 minutes and its images/s came out 2-4x low (a later
bare forward 50x): compare speeds only from one quiet run. A rerun (cached) re-times
--timing images per row in a few minutes.

    python bench/backbones.py [--sizes 64,128,224] [--train 3000] [--test 1000]
        [--device cpu,cuda] [--timing 640] [--workers N]

A device that is not there (CUDA without a GPU) is reported as not measured, never an error.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fashion import load, write_pngs  # noqa: E402

from server.learner import Learner, LearnerConfig  # noqa: E402
from server.learner.backbone import map_by_position  # noqa: E402
from server.learner.cache import EmbeddingCache  # noqa: E402
from server.learner.catalog import PACKAGED  # noqa: E402
from server.learner.head import HeadModel, Projection  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
CACHE = OUT / "backbones-cache"
SYMMETRIC = "efficientnet_lite0/symmetric"
TEST_ID = 60_001  # test image j has id TEST_ID + j (Fashion-MNIST has 60,000 training images)


class SymmetricLite0Learner(Learner):
    """The learner with timm's efficientnet_lite0 (symmetric padding) holding the packaged
    lite0 weights: everything else (transforms, loader, batches, cache) is the product's; the
    normalisation is what timm resolves for that model (ImageNet mean/std)."""

    def backbone(self):
        if self._model is None:
            import timm

            model = timm.create_model("efficientnet_lite0", num_classes=1000)
            model.load_state_dict(
                map_by_position(model, PACKAGED["efficientnet_lite0"].weights()))
            model.reset_classifier(0)
            self._model = model.eval()
        return self._model

    def cache(self) -> EmbeddingCache:
        name = f"efficientnet_lite0-symmetric-{self.config.input_size}"
        folder = self.cache_root / "embeddings" / name
        dim = EmbeddingCache.stored_dim(folder) or self.backbone().num_features
        return EmbeddingCache(folder, dim)


@dataclass
class Row:
    device: str
    backbone: str
    size: int
    accuracy: float
    balanced: float
    rate: float  # images/s
    timed: str  # what was timed
    seconds: float  # the train + test images at that rate


def make_learner(backbone: str, size: int, device: str, workers: int | None,
                 root: Path) -> Learner:
    config = LearnerConfig(backbone=backbone if backbone != SYMMETRIC else "efficientnet_lite0",
                           input_size=size, workers=workers, device=device)
    cls = SymmetricLite0Learner if backbone == SYMMETRIC else Learner
    return cls(config, root)


def timed_embed(learner: Learner, ids: np.ndarray, paths: list[str], root: Path) -> float:
    """Seconds of one embed of `paths` into an empty cache under `root`."""
    learner.cache_root = root
    started = time.perf_counter()
    failed = learner.embed(ids, paths)
    seconds = time.perf_counter() - started
    if failed:
        sys.exit(f"{len(failed)} images could not be read (first id {failed[0]})")
    return seconds


def measure(backbone: str, size: int, device: str, args, ids: np.ndarray, paths: list[str],
            train_y: np.ndarray, test_y: np.ndarray) -> Row:
    root = CACHE / device
    learner = make_learner(backbone, size, device, args.workers, root)
    missing = len(learner.cache().missing(ids))
    learner.backbone()  # built (weights read) before any timing
    with tempfile.TemporaryDirectory(prefix="backbones-timing-") as tmp:
        batch = learner.config.batch_size
        timed_embed(learner, ids[:batch], paths[:batch], Path(tmp) / "warm-up")
        learner.cache_root = root
        if missing == len(ids):  # nothing cached: this embed is the timing
            timed = (len(ids), timed_embed(learner, ids, paths, root), "all")
        else:
            # Cached, or partly (an interrupted run): the rest is embedded untimed, and a
            # sample is timed into an empty cache.
            timed_embed(learner, ids, paths, root)
            count = min(args.timing, len(ids))
            seconds = timed_embed(learner, ids[:count], paths[:count], Path(tmp) / "timed")
            timed = (count, seconds, f"{count} new")
        learner.cache_root = root
    features = learner.embeddings(ids)
    train_x, test_x = features[: len(train_y)], features[len(train_y):]
    head = HeadModel.fit(train_x, train_y, seed=0, projection=Projection.fit(features))
    predicted = head.predict(test_x)
    rate = timed[0] / timed[1]
    return Row(device, backbone, size, float(np.mean(predicted == test_y)),
               float(balanced_accuracy_score(test_y, predicted)), rate, timed[2],
               len(ids) / rate)


def pareto(rows: list[Row]) -> list[Row]:
    """The rows no other row beats on both accuracy and speed."""
    return [r for r in rows if not any(
        o.accuracy >= r.accuracy and o.rate >= r.rate
        and (o.accuracy, o.rate) != (r.accuracy, r.rate) for o in rows)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="64,128,224")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--device", default="cpu,cuda",
                        help="devices to measure, comma-separated (cpu, cuda)")
    parser.add_argument("--backbones", default=",".join([*PACKAGED, SYMMETRIC]))
    parser.add_argument("--timing", type=int, default=640,
                        help="images timed when the embeddings were already cached")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader processes (0: a reading thread); default: the learner's")
    args = parser.parse_args()
    begun = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    train_images, train_y = load("train")
    test_images, test_y = load("test")
    train_y, test_y = train_y[: args.train], test_y[: args.test]
    paths = write_pngs(train_images[: args.train], OUT / "fashion" / "train", "train")
    paths += write_pngs(test_images[: args.test], OUT / "fashion" / "test", "test")
    ids = np.concatenate([np.arange(1, args.train + 1), np.arange(TEST_ID, TEST_ID + args.test)])

    devices, skipped = [], []
    for device in args.device.split(","):
        if device.startswith("cuda") and not torch.cuda.is_available():
            skipped.append(f"{device}: not measured (torch.cuda.is_available() is False)")
        else:
            devices.append(device)
    names = args.backbones.split(",")
    for name in names:
        if name in PACKAGED and not PACKAGED[name].installed():
            skipped.append(f"{name}: not measured ({PACKAGED[name].package} not installed)")
    names = [n for n in names if n not in PACKAGED or PACKAGED[n].installed()]

    workers = LearnerConfig(workers=args.workers).resolved_workers()
    print(f"Fashion-MNIST: {args.train} training and {args.test} test images (28x28 PNGs);"
          f" head: HeadModel on the training features; torch {torch.__version__},"
          f" {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
          + (f"{workers} loader process(es)" if workers
             else "a reading thread (no loader process)"))
    print(f"images/s: Learner.embed into an empty cache (all: this run's embedding of all"
          f" {len(ids)}; N new: a separate embed of N); embed s: {len(ids)} images at that rate")
    header = (f"{'device':<7}{'backbone':<30}{'size':>5}{'accuracy':>10}{'balanced':>10}"
              f"{'images/s':>10}{'timed':>10}{'embed s':>9}")
    print(header if devices else "no device to measure", flush=True)
    rows: list[Row] = []
    for device in devices:
        for size in sizes:
            for name in names:
                row = measure(name, size, device, args, ids, paths, train_y, test_y)
                rows.append(row)
                print(f"{row.device:<7}{row.backbone:<30}{row.size:>5}{row.accuracy:>10.3f}"
                      f"{row.balanced:>10.3f}{row.rate:>10.1f}{row.timed:>10}"
                      f"{row.seconds:>9.1f}", flush=True)
    print()
    for line in skipped:
        print(line)
    for device in devices:
        # The symmetric lite0 is a comparison, not a setting a project can choose.
        mine = [r for r in rows if r.device == device and r.backbone != SYMMETRIC]
        if not mine:
            continue
        best = max(mine, key=lambda r: r.accuracy)
        thrifty = max(mine, key=lambda r: r.accuracy / r.seconds)
        print(f"{device}: most accurate {best.backbone} at {best.size} px ({best.accuracy:.3f},"
              f" {best.rate:.0f} images/s); best accuracy per second of embedding"
              f" {thrifty.backbone} at {thrifty.size} px ({thrifty.accuracy:.3f} in"
              f" {thrifty.seconds:.1f} s: {thrifty.accuracy / thrifty.seconds:.4f}/s)")
        print(f"{device}: not beaten on both accuracy and speed (a better guide: accuracy per"
              " second favours the fastest): " + ", ".join(
            f"{r.backbone} {r.size} px ({r.accuracy:.3f}, {r.rate:.0f}/s)"
            for r in sorted(pareto(mine), key=lambda r: -r.rate)))
    print(f"total {time.perf_counter() - begun:.0f} s")
    print("reproduce: python bench/backbones.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
