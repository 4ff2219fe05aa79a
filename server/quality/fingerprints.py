"""Per-image fingerprints for finding duplicates: perceptual hashes, a centred thumbnail
(candidates) and a small grey image (verification); see duplicates.py for how they are used."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

Progress = Callable[[float, str], None]
THUMB = 12  # side of the centred thumbnail used to find candidates
CANVAS = 64  # largest side of the grey image kept for verification
HASH_SIDE = 256  # larger images are reduced first: hashes only look at 8-32 px anyway


@dataclass
class Fingerprints:
    """Per image: three 64-bit perceptual hashes, a centred thumbnail, and a small grey
    image for verification. Positions follow the images given."""

    phash: np.ndarray  # (n,) uint64
    dhash: np.ndarray
    whash: np.ndarray
    thumbs: np.ndarray  # (n, 2, THUMB**2) float32: centroid- and median-centred
    canvases: np.ndarray  # (n, s, s) uint8, s = the largest image side, at most CANVAS
    sizes: np.ndarray  # (n, 2) height and width of each image, centred on its canvas
    failed: list[int] = field(default_factory=list)  # positions that could not be read
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.thumbs)


def _hash_bits(value) -> int:
    """An imagehash ImageHash (8x8 booleans) as a 64-bit integer."""
    return int(np.packbits(value.hash.ravel()).view(">u8")[0])


def _background(grey: np.ndarray) -> float:
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border))


def _weighted_median(weights: np.ndarray) -> float:
    """The position (in pixels, fractional) that splits the weight along an axis in half."""
    cumulative = np.cumsum(weights)
    half = cumulative[-1] / 2
    index = int(np.searchsorted(cumulative, half))
    before = cumulative[index - 1] if index > 0 else 0.0
    return index - 0.5 + (half - before) / max(float(weights[index]), 1e-9)


def centred_thumbnails(grey: np.ndarray, side: int = THUMB) -> np.ndarray:
    """(2, side * side): thumbnails of a grey image moved so the middle of its mass is in
    the middle, mean-subtracted and normalised, once with the centroid as the middle and once
    with the weighted median along each axis. Mass is the difference from the border's
    median (the background), so dark objects on light ground count as much as light on
    dark. A shift that cuts a strip off the edge moves the centroid less than the image (the
    strip's mass was far from it) and the median less still, but which one then matches
    its original better varies: on Fashion-MNIST each finds planted copies the other ranks
    below ten look-alikes, so candidates come from both. The move is by fractions of a
    pixel: rounding would send a copy whose middle lies near x.5 a whole pixel away."""
    from scipy.ndimage import shift

    background = _background(grey)
    mass = np.abs(grey - background)
    total = mass.sum()
    out = np.zeros((2, side * side), np.float32)
    if total == 0:
        return out
    rows, cols = np.indices(grey.shape)
    middles = (
        ((rows * mass).sum() / total, (cols * mass).sum() / total),
        (_weighted_median(mass.sum(axis=1)), _weighted_median(mass.sum(axis=0))),
    )
    for view, (y, x) in enumerate(middles):
        dy, dx = (grey.shape[0] - 1) / 2 - y, (grey.shape[1] - 1) / 2 - x
        moved = shift(grey, (dy, dx), order=1, mode="constant", cval=background)
        small = Image.fromarray(moved).resize((side, side), Image.Resampling.BOX)
        thumb = np.asarray(small, dtype=np.float32).ravel()
        thumb = thumb - thumb.mean()
        norm = np.linalg.norm(thumb)
        out[view] = thumb / norm if norm > 0 else thumb
    return out


def verification_image(image: Image.Image, side: int = CANVAS) -> np.ndarray:
    """The grey image reduced by a whole factor to fit `side` (images up to `side` stay
    as they are). A whole factor keeps a one-pixel shift of a small image a whole number of
    pixels (or less than one) here, which the verification can undo."""
    grey = image.convert("L")
    factor = math.ceil(max(grey.size) / side)
    if factor > 1:
        grey = grey.reduce(factor)
    return np.asarray(grey)


def _on_canvases(images: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Stack images of different sizes, each centred on a square of its own background."""
    sizes = np.array([(0, 0) if i is None else i.shape for i in images], np.int64).reshape(-1, 2)
    side = int(sizes.max()) if len(sizes) else 1
    canvases = np.zeros((len(images), side, side), np.uint8)
    for canvas, pixels in zip(canvases, images, strict=True):
        if pixels is None:
            continue
        h, w = pixels.shape
        canvas[:] = int(round(_background(pixels.astype(np.float32))))
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top : top + h, left : left + w] = pixels
    return canvases, sizes


def fingerprint(image: Image.Image | np.ndarray) -> tuple:
    """(phash, dhash, whash, centred thumbnail, verification image) of one image, given as
    a PIL image or a pixel array."""
    import imagehash

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    if max(image.size) > HASH_SIDE:
        image = image.copy()
        image.thumbnail((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX)
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    return (
        _hash_bits(imagehash.phash(image)),
        _hash_bits(imagehash.dhash(image)),
        _hash_bits(imagehash.whash(image)),
        centred_thumbnails(grey),
        verification_image(image),
    )


def _fingerprint_source(source: str | Path | np.ndarray | Image.Image):
    if isinstance(source, str | Path):
        with Image.open(source) as image:
            image.draft("L", (HASH_SIDE, HASH_SIDE))  # JPEG: decode at a smaller scale
            return fingerprint(image)
    return fingerprint(source)


def _fingerprint_many(sources: Sequence) -> list:
    results = []
    for source in sources:
        try:
            results.append(_fingerprint_source(source))
        except (OSError, ValueError, Image.DecompressionBombError):
            results.append(None)
    return results


def fingerprints(
    images: Sequence[str | Path | np.ndarray | Image.Image],
    progress: Progress | None = None,
    workers: int = 1,
) -> Fingerprints:
    """Fingerprints of file paths, pixel arrays or PIL images; `workers` > 1 decodes in that
    many processes. Unreadable files are listed in `failed`; they are never paired."""
    started = time.perf_counter()
    n = len(images)
    chunk = 500
    chunks = [images[i : i + chunk] for i in range(0, n, chunk)]
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the caller may run threads, and a fork inherits their locks.
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = executor.map(_fingerprint_many, chunks)
    else:
        executor = None
        results = map(_fingerprint_many, chunks)
    hashes = np.zeros((3, n), np.uint64)
    thumbs = np.zeros((n, 2, THUMB * THUMB), np.float32)
    small: list[np.ndarray | None] = [None] * n
    failed = []
    position = 0
    try:
        for values_of_chunk in results:
            for values in values_of_chunk:
                if values is None:
                    failed.append(position)
                else:
                    hashes[:, position] = values[:3]
                    thumbs[position] = values[3]
                    small[position] = values[4]
                position += 1
            if progress is not None:
                progress(position / n, f"fingerprinted {position} of {n} images")
    finally:
        if executor is not None:
            executor.shutdown()
    canvases, sizes = _on_canvases(small)
    return Fingerprints(
        hashes[0],
        hashes[1],
        hashes[2],
        thumbs,
        canvases,
        sizes,
        failed,
        time.perf_counter() - started,
    )
