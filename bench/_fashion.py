"""Fashion-MNIST for the benches: Debian's dataset-fashion-mnist (gzipped IDX files)."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Boot"]


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = ROOT / f"{prefix}-images-idx3-ubyte.gz"
    labels = ROOT / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists():
        sys.exit(f"{images} is missing: apt-get install dataset-fashion-mnist")
    return _idx(images), _idx(labels).astype(np.int64)


def write_pngs(images: np.ndarray, folder: Path, prefix: str) -> list[str]:
    """28x28 grey PNGs on disk (once); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, pixels in enumerate(images):
        path = folder / f"{prefix}-{index:05d}.png"
        if not path.exists():
            Image.fromarray(pixels, mode="L").save(path)
        paths.append(str(path))
    return paths
