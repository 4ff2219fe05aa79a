"""Images per second of the embedding pipeline (PNG files on disk -> decode -> resize ->
forward, DataLoader workers beside the model) against the bare forward pass on ready
tensors at the same size and batch: the ratio is how close the pipeline gets to the limit.

    python bench/embed_throughput.py [--images 5000] [--input-size 64] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fashion import load, write_pngs  # noqa: E402

from server.learner import Learner, LearnerConfig  # noqa: E402


def bare_rate(model, batch: torch.Tensor, images: int) -> float:
    """Images/s of the forward the embedding runs (features, pooled), on one ready batch."""
    with torch.inference_mode():
        model.forward_head(model.forward_features(batch), pre_logits=True)  # warm up
        started = time.perf_counter()
        done = 0
        while done < images:
            model.forward_head(model.forward_features(batch), pre_logits=True)
            done += len(batch)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--input-size", type=int, default=LearnerConfig().input_size)
    parser.add_argument("--batch-size", type=int, default=LearnerConfig().batch_size)
    parser.add_argument("--workers", type=int, default=None,
                        help="loader processes (0: a reading thread); default: by cores")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    images, _ = load("train")
    config = LearnerConfig(input_size=args.input_size, batch_size=args.batch_size,
                           workers=args.workers)
    bare, pipeline = [], []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_pngs(images[: args.images], Path(tmp) / "png", "img")
        model = Learner(config, Path(tmp) / "cache").backbone().eval()
        batch = torch.randn(args.batch_size, 3, args.input_size, args.input_size)
        # This machine's speed drifts (shared cores): the two are measured in turn, and each
        # pipeline pass is compared with the bare pass just before it.
        for repeat in range(args.repeats):
            bare.append(bare_rate(model, batch, args.images))
            learner = Learner(config, Path(tmp) / f"cache-{repeat}")  # an empty cache
            started = time.perf_counter()
            learner.embed(np.arange(1, len(paths) + 1), paths)
            pipeline.append(len(paths) / (time.perf_counter() - started))
    workers = config.resolved_workers()
    print(f"{args.images} Fashion-MNIST PNGs, {args.input_size}x{args.input_size}, batch "
          f"{args.batch_size}, " + (f"{workers} loader process(es)" if workers else
                                    "a reading thread (no loader process)")
          + f", {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs;"
          f" {args.repeats} passes of each, taken in turn")
    ratios = sorted(p / b for p, b in zip(pipeline, bare))
    print("bare forward on ready tensors: " + ", ".join(f"{r:.0f}" for r in bare) + " images/s")
    print("pipeline from files on disk:   " + ", ".join(f"{r:.0f}" for r in pipeline)
          + " images/s")
    print("pipeline / bare forward:       " + ", ".join(f"{p / b:.2f}" for p, b in
                                                        zip(pipeline, bare))
          + f"; median {ratios[len(ratios) // 2]:.2f}")
    print("reproduce: python bench/embed_throughput.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
