"""The demo dataset: scikit-learn's 1,797 handwritten digits, written as upscaled PNGs.

The true labels go to an oracle CSV beside the image folder, out of the project, for
simulations and for checking exports; the project itself starts with no labels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from . import csv_writer

SIDE = 64  # the 8x8 originals, upscaled so they read well in the browser


def digit_image(pixels: np.ndarray) -> Image.Image:
    """An 8x8 array of ink (0..16) -> a SIDE x SIDE grey image, dark ink on white."""
    grey = (255 - np.clip(pixels, 0, 16) * (255 / 16)).astype(np.uint8).reshape(8, 8)
    return Image.fromarray(grey, mode="L").resize((SIDE, SIDE), Image.Resampling.BICUBIC)


def write_digits(images_dir: Path, oracle_csv: Path, limit: int | None = None) -> int:
    """Write the digits as PNGs (names carry no label) and their labels to oracle_csv."""
    from sklearn.datasets import load_digits  # ships its data; no download

    digits = load_digits()
    images_dir.mkdir(parents=True, exist_ok=True)
    count = len(digits.target) if limit is None else min(limit, len(digits.target))
    with oracle_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv_writer.writer(handle)
        writer.writerow(["file", "label"])
        for index in range(count):
            name = f"digit-{index:04d}.png"
            digit_image(digits.images[index]).save(images_dir / name)
            writer.writerow([name, str(int(digits.target[index]))])
    return count


def read_oracle(oracle_csv: Path) -> dict[str, str]:
    """file name -> true label."""
    with oracle_csv.open(newline="", encoding="utf-8") as handle:
        return {csv_writer.read_cell(row["file"]): csv_writer.read_cell(row["label"])
                for row in csv.DictReader(handle)}
