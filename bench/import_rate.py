"""How fast does a folder import? Writes N small PNGs (Fashion-MNIST, else scikit-learn's
digits) to a temporary folder, then times, each into a fresh project where it says so:

  1. init_project: the real `activelabel init` path (worker processes at >= PARALLEL_FROM files)
  2. import_images of the same folder again: every file must come back a duplicate
  3. import_folder with workers=1: the same check in one process, for comparison

and prints images per second for each. Not a test: run it by hand.

    python bench/import_rate.py [--count 10000] [--keep]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from server import store
from server.dataset.importer import PARALLEL_FROM, import_folder
from server.projects import import_images, init_project

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
SIDE = 64
IDX_IMAGES = 2051  # magic number of an IDX file of unsigned-byte images, 3 dimensions


def read_idx_images(path: Path) -> np.ndarray:
    """A gzipped IDX image file -> array (count, rows, cols) of uint8."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic, count, rows, cols = np.frombuffer(data[:16], dtype=">u4")
    if magic != IDX_IMAGES:
        raise ValueError(f"{path}: not an IDX image file (magic {magic})")
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(int(count), int(rows), int(cols))


def source_images(count: int) -> tuple[str, np.ndarray]:
    """Greyscale uint8 images to write, and where they came from. Repeats the set when it is
    smaller than count, varying one pixel per round so every file has its own content."""
    if FASHION.is_file():
        name, images = "Fashion-MNIST", read_idx_images(FASHION)
    else:
        from sklearn.datasets import load_digits

        digits = load_digits().images  # 0..16 ink, 8x8
        name, images = "scikit-learn digits", (255 - digits * (255 / 16)).astype(np.uint8)
    rounds = -(-count // len(images))
    stacked = np.concatenate([images] * rounds)[:count].copy()
    for r in range(1, rounds):
        stacked[r * len(images) : (r + 1) * len(images), 0, 0] ^= r & 0xFF
    return name, stacked


def write_pngs(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for index, pixels in enumerate(images):
        img = Image.fromarray(pixels, mode="L").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        img.save(folder / f"img-{index:05d}.png")


def timed(label: str, files: int, run):
    start = time.perf_counter()
    report = run()
    seconds = time.perf_counter() - start
    print(f"{label:<34} {seconds:7.2f} s  {files / seconds:8.0f} images/s   {report.summary()}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="import-rate-"))
    try:
        name, images = source_images(args.count)
        folder = work / "images"
        start = time.perf_counter()
        write_pngs(folder, images)
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"wrote {args.count:,} {SIDE}x{SIDE} PNGs from {name} ({size / 1e6:.1f} MB) "
              f"in {time.perf_counter() - start:.1f} s; {os.cpu_count()} CPUs, "
              f"worker processes from {PARALLEL_FROM:,} files")

        created: dict = {}

        def first():
            created["project"], report = init_project(work / "project", folder, ["a", "b"])
            return report

        report = timed("init (first import)", args.count, first)
        again = timed("import again (all duplicates)", args.count,
                      lambda: import_images(created["project"], folder))
        if again.added or len(again.duplicates) != report.added:
            print("ERROR: the second import was not all duplicates", file=sys.stderr)
            return 1

        (work / "empty").mkdir()  # the serial project starts empty; its import is timed below
        serial, _ = init_project(work / "serial", work / "empty", ["a", "b"])
        db = store.connect(serial.db_path)
        try:
            timed("import, one process (workers=1)", args.count,
                  lambda: import_folder(db, folder, seed=0, votes_needed=1,
                                        max_pixels=serial.config.max_pixels, workers=1))
        finally:
            db.conn.close()
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
