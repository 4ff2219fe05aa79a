"""Images per second of the embedding pipeline (PNG files on disk -> decode -> resize ->
forward, DataLoader workers beside the model) against the bare forward pass on ready
tensors at the same size and batch: the ratio is how close the pipeline gets to the limit.

    python bench/embed_throughput.py [--images 5000] [--input-size 64] [--workers 1]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--input-size", type=int, default=LearnerConfig().input_size)
    parser.add_argument("--batch-size", type=int, default=LearnerConfig().batch_size)
    parser.add_argument("--workers", type=int, default=LearnerConfig().workers)
    args = parser.parse_args()
    images, _ = load("train")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_pngs(images[: args.images], Path(tmp) / "png", "img")
        config = LearnerConfig(input_size=args.input_size, batch_size=args.batch_size,
                               workers=args.workers)
        learner = Learner(config, Path(tmp) / "cache")
        model = learner.backbone()
        # The limit: the same model, batch and size on tensors already in memory.
        batch = torch.randn(args.batch_size, 3, args.input_size, args.input_size)
        with torch.inference_mode():
            model(batch)  # warm up
            started = time.perf_counter()
            done = 0
            while done < args.images:
                model(batch)
                done += args.batch_size
        bare = done / (time.perf_counter() - started)
        started = time.perf_counter()
        learner.embed(np.arange(1, len(paths) + 1), paths)
        pipeline = len(paths) / (time.perf_counter() - started)
    print(f"{args.images} Fashion-MNIST PNGs, {args.input_size}x{args.input_size}, batch "
          f"{args.batch_size}, {args.workers} loader worker(s), {torch.get_num_threads()} torch "
          f"threads")
    print(f"bare forward on ready tensors: {bare:7.0f} images/s")
    print(f"pipeline from files on disk:   {pipeline:7.0f} images/s")
    print(f"pipeline / bare forward:       {pipeline / bare:7.2f}")
    print("reproduce: python bench/embed_throughput.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
