"""Exact and near-duplicate images.

Exact duplicates share a sha256. Near-duplicates (a copy shifted by a pixel or two, made
brighter or darker, re-encoded as JPEG) are found in two steps, from per-image fingerprints:

1. Candidates: each image's nearest neighbours by the cosine of a 12x12 thumbnail moved so
   the middle of its mass sits in the middle (which undoes most of a shift; two ways of
   finding the middle, each with its own neighbours) and mean-subtracted (which ignores
   brightness). The similarity matrix is computed a tile at a time: memory stays bounded.
2. Verification: the best correlation of the two images over shifts of up to 2 pixels,
   after a 3x3 blur, at native resolution up to 64 px (larger images are reduced by a whole
   factor, so a shift stays a whole pixel, or less, where it matters: on small images).

Perceptual hashes (imagehash's phash, dhash, whash) and, when given, embedding cosines are
kept as evidence on every pair, not as deciders: bench/duplicates.py found that on
Fashion-MNIST a 1-2 pixel shift of a 28 px image moves a copy's hashes as far as those of
thousands of other images, and embeddings separate copies from look-alikes worse still.

Pairs that pass become edges; groups are their connected components (union-find).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

Progress = Callable[[float, str], None]
HASHES = ("phash", "dhash", "whash")
THUMB = 12  # side of the centred thumbnail used to find candidates
CANVAS = 64  # largest side of the grey image kept for verification
HASH_SIDE = 256  # larger images are reduced first: hashes only look at 8-32 px anyway
BLOCK = 1024  # rows of the similarity matrix per block of the candidate search
TILE = 16384  # ... and columns per tile: 64 MB of floats at a time
BLUR = 3  # box blur before the aligned correlation
VERIFY_SLICE = 16384  # candidate pairs whose images are gathered at once


@dataclass
class DuplicateRule:
    """Which pairs are near-duplicates. Defaults chosen by bench/duplicates.py on 5,000
    Fashion-MNIST images with 200 planted copies (see its output)."""

    neighbours: int = 20  # candidates per image and centring, nearest by thumbnail cosine
    min_thumb_cosine: float = 0.85  # ... and at least this close
    max_shift: int = 2  # pixels searched each way when aligning a pair
    min_aligned: float = 0.997  # best correlation over the shifts (blurred), to accept


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


@dataclass
class DuplicatePair:
    first: int
    second: int
    aligned: float  # best correlation over the shifts
    thumb_cosine: float
    phash: int  # Hamming distances, 0..64
    dhash: int
    whash: int
    embedding_cosine: float | None = None


@dataclass
class DuplicateReport:
    groups: list[list[int]]  # connected components of the pairs, sorted, largest first
    pairs: list[DuplicatePair]  # accepted pairs, most similar first
    candidates: int  # pairs verified
    seconds: float = 0.0


def exact_duplicates(sha256s: Sequence[str]) -> list[list[int]]:
    """Groups of positions whose files have the same sha256 (only groups of two or more)."""
    by_hash: dict[str, list[int]] = {}
    for position, digest in enumerate(sha256s):
        by_hash.setdefault(digest.lower(), []).append(position)
    return sorted((g for g in by_hash.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


# -- fingerprints -----------------------------------------------------------------------------
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
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(workers)
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


# -- pair search --------------------------------------------------------------------------------
def candidate_pairs(
    thumbs: np.ndarray,
    neighbours: int,
    min_cosine: float,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (m, 2) with first < second, their cosines): each image with its `neighbours`
    nearest others by thumbnail cosine that reach `min_cosine`. The similarity matrix is
    computed a tile at a time (BLOCK x TILE floats), keeping each tile's best candidates."""
    import torch

    n = len(thumbs)
    k = min(neighbours, n - 1)
    if k < 1:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    every = torch.from_numpy(np.ascontiguousarray(thumbs, dtype=np.float32))
    found_pairs, found_cosines = [], []
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        rows = every[start:stop]
        best_cosines, best_columns = [], []
        for left in range(0, n, TILE):
            right = min(left + TILE, n)
            similarity = rows @ every[left:right].T
            if max(start, left) < min(stop, right):
                inside = torch.arange(max(start, left), min(stop, right))
                similarity[inside - start, inside - left] = -2.0  # not its own pair
            # torch.topk: ten times faster than numpy's argpartition on rows this long
            cosines, columns = torch.topk(similarity, min(k, right - left), dim=1)
            best_cosines.append(cosines)
            best_columns.append(columns + left)
        cosines, which = torch.topk(torch.cat(best_cosines, dim=1), k, dim=1)
        columns = torch.gather(torch.cat(best_columns, dim=1), 1, which)
        cosines, columns = cosines.numpy().ravel(), columns.numpy().ravel()
        keep = cosines >= min_cosine
        pairs = np.stack([np.repeat(np.arange(start, stop), k)[keep], columns[keep]], axis=1)
        found_pairs.append(np.sort(pairs, axis=1))
        found_cosines.append(cosines[keep])
        if progress is not None:
            progress(stop / n, f"compared {stop} of {n} images")
    pairs = np.concatenate(found_pairs)
    cosines = np.concatenate(found_cosines)
    pairs, first = np.unique(pairs, axis=0, return_index=True)  # each pair found from both ends
    return pairs, cosines[first]


def _content_masks(sizes: np.ndarray, side: int, inset: int = 0) -> np.ndarray:
    """(m, side, side) 1.0 where a canvas holds the image (less `inset` pixels along its
    edges), 0.0 on the padding around it."""
    index = np.arange(side)
    h, w = sizes[:, 0, None], sizes[:, 1, None]
    top, left = (side - h) // 2 + inset, (side - w) // 2 + inset
    h, w = h - 2 * inset, w - 2 * inset
    rows = (index >= top) & (index < top + h)
    cols = (index >= left) & (index < left + w)
    return (rows[:, :, None] & cols[:, None, :]).astype(np.float32)


def _span(offset: int, side: int) -> slice:
    """The part of an axis that overlaps the other image after shifting it by `offset`."""
    return slice(max(offset, 0), side + min(offset, 0))


def aligned_correlation(
    first: np.ndarray,
    second: np.ndarray,
    first_sizes: np.ndarray,
    second_sizes: np.ndarray,
    max_shift: int,
    blur: int | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """For pairs of canvases (m, s, s) holding images of the given (height, width), the best
    Pearson correlation over every shift of up to `max_shift` pixels each way, after a
    `blur` x `blur` box blur. Only pixels where both images lie count: the strip a shift
    pushed out of one image is left out, as is the padding (and the blurred edge next to it).
    The blur averages away JPEG's pixel noise while a look-alike's different outline or
    print, a few pixels wide, stays: on Fashion-MNIST it separated planted JPEG copies from
    look-alike trousers that the plain correlation ranked above them."""
    import torch
    from scipy.ndimage import uniform_filter

    blur = BLUR if blur is None else blur
    m, full = len(first), first.shape[1]
    best = np.full(m, -1.0, np.float32)
    for start in range(0, m, chunk):
        part = slice(start, start + chunk)
        # Work on the middle of the canvases, as large as the largest image of the chunk.
        side = int(max(first_sizes[part].max(), second_sizes[part].max()))
        crop = slice((full - side) // 2, (full - side) // 2 + side)
        stacks, means = [], []
        for canvases, sizes in ((first, first_sizes), (second, second_sizes)):
            pixels = uniform_filter(
                canvases[part][:, crop, crop].astype(np.float32), (1, blur, blur), mode="nearest"
            )
            mask = _content_masks(np.asarray(sizes[part]), full, blur // 2)[:, crop, crop]
            # Centred on the image's own mean first: the sums below then stay small enough
            # for float32 to give correlations near 1 to four decimals.
            mean = (pixels * mask).sum((1, 2)) / np.maximum(mask.sum((1, 2)), 1.0)
            pixels = (pixels - mean[:, None, None]) * mask
            means.append(mean)
            stacks.append(torch.from_numpy(np.stack([pixels, pixels * pixels, mask], axis=1)))
        a_stack, b_stack = stacks
        count, r = len(a_stack), max_shift
        # Every product sum at every shift at once, as a grouped convolution: for pair p,
        # channels i of a and j of b, sums[p, j, i, u, v] = sum_x a_i(x) b_j(x + (u, v) - r).
        # The channels are zero outside each image, so the sums cover just the overlap.
        padded = torch.nn.functional.pad(b_stack, (r, r, r, r))
        padded = padded.reshape(1, count * 3, side + 2 * r, side + 2 * r)
        kernels = a_stack.unsqueeze(1).expand(count, 3, 3, side, side)
        kernels = kernels.reshape(count * 9, 1, side, side)
        sums = torch.nn.functional.conv2d(padded, kernels, groups=count * 3)
        sums = sums.reshape(count, 3, 3, -1).numpy().astype(np.float64)
        weight = np.maximum(sums[:, 2, 2], 1.0)
        sum_a, sum_b = sums[:, 2, 0], sums[:, 0, 2]
        covariance = sums[:, 0, 0] - sum_a * sum_b / weight
        var_a = sums[:, 2, 1] - sum_a**2 / weight
        var_b = sums[:, 1, 2] - sum_b**2 / weight
        norms = np.sqrt(np.maximum(var_a, 0) * np.maximum(var_b, 0))
        with np.errstate(invalid="ignore", divide="ignore"):
            correlation = np.where(norms > 1e-3 * weight, covariance / norms, -1.0)
        # Two flat images (no variation) match when their levels do.
        flat = (var_a <= 1e-3 * weight) & (var_b <= 1e-3 * weight)
        same_level = (np.abs(means[0] - means[1]) < 1)[:, None].repeat(flat.shape[1], axis=1)
        correlation[flat] = same_level[flat]
        best[part] = correlation.max(axis=1)
    return best


def hamming(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Bits that differ between two arrays of 64-bit hashes."""
    differ = np.asarray(first, np.uint64) ^ np.asarray(second, np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(differ).astype(np.int64)
    bits = np.unpackbits(differ.reshape(-1, 1).view(np.uint8), axis=1)
    return bits.sum(axis=1).astype(np.int64)


def connected_groups(n: int, pairs: np.ndarray) -> list[list[int]]:
    """Connected components (of size two or more) of the graph with these edges."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in np.unique(pairs):
        groups.setdefault(root(int(i)), []).append(int(i))
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def _part_of(progress: Progress | None, start: float, share: float) -> Progress | None:
    if progress is None:
        return None
    return lambda fraction, message: progress(start + share * fraction, message)


@dataclass
class Candidates:
    """Every verified candidate pair with all its evidence: for threshold sweeps."""

    pairs: np.ndarray  # (m, 2)
    thumb_cosine: np.ndarray
    aligned: np.ndarray
    hashes: dict[str, np.ndarray]
    embedding_cosine: np.ndarray | None


def score_candidates(
    prints: Fingerprints,
    rule: DuplicateRule = DuplicateRule(),
    embeddings: np.ndarray | None = None,
    progress: Progress | None = None,
) -> Candidates:
    """Find candidate pairs and measure every signal on them."""
    thumbs = prints.thumbs.copy()
    thumbs[prints.failed] = 0.0
    found = [
        candidate_pairs(
            thumbs[:, view],
            rule.neighbours,
            rule.min_thumb_cosine,
            _part_of(progress, view / 2, 1 / 2),
        )
        for view in range(thumbs.shape[1])
    ]
    pairs = np.concatenate([f[0] for f in found])
    cosines = np.concatenate([f[1] for f in found])
    # A pair found in both views: keep its higher cosine.
    order = np.lexsort((-cosines, pairs[:, 1], pairs[:, 0]))
    pairs, first = np.unique(pairs[order], axis=0, return_index=True)
    cosines = cosines[order][first]
    # Gathered a slice of pairs at a time: all 2 million candidates' images at once would
    # take gigabytes (bench/duplicates.py at 100,000 images peaked at 4.7 GB before this).
    aligned = np.empty(len(pairs), np.float32)
    for start in range(0, len(pairs), VERIFY_SLICE):
        first, second = pairs[start : start + VERIFY_SLICE].T
        aligned[start : start + VERIFY_SLICE] = aligned_correlation(
            prints.canvases[first],
            prints.canvases[second],
            prints.sizes[first],
            prints.sizes[second],
            rule.max_shift,
        )
    hashes = {
        name: hamming(getattr(prints, name)[pairs[:, 0]], getattr(prints, name)[pairs[:, 1]])
        for name in HASHES
    }
    embedding_cosine = None
    if embeddings is not None:
        unit = np.asarray(embeddings, np.float32)
        unit = unit / (np.linalg.norm(unit, axis=1, keepdims=True) + 1e-12)
        embedding_cosine = np.einsum("ij,ij->i", unit[pairs[:, 0]], unit[pairs[:, 1]])
    return Candidates(pairs, cosines, aligned, hashes, embedding_cosine)


def find_duplicates(
    prints: Fingerprints,
    rule: DuplicateRule = DuplicateRule(),
    embeddings: np.ndarray | None = None,
    progress: Progress | None = None,
) -> DuplicateReport:
    """Near-duplicate pairs and their groups. `embeddings` (n, d), when given, only add
    their cosine to each pair's evidence."""
    started = time.perf_counter()
    found = score_candidates(prints, rule, embeddings, progress)
    accepted = np.flatnonzero(found.aligned >= rule.min_aligned)
    accepted = accepted[np.argsort(-found.aligned[accepted], kind="stable")]
    pairs = [
        DuplicatePair(
            first=int(found.pairs[i, 0]),
            second=int(found.pairs[i, 1]),
            aligned=float(found.aligned[i]),
            thumb_cosine=float(found.thumb_cosine[i]),
            phash=int(found.hashes["phash"][i]),
            dhash=int(found.hashes["dhash"][i]),
            whash=int(found.hashes["whash"][i]),
            embedding_cosine=None
            if found.embedding_cosine is None
            else float(found.embedding_cosine[i]),
        )
        for i in accepted
    ]
    return DuplicateReport(
        groups=connected_groups(len(prints), found.pairs[accepted]),
        pairs=pairs,
        candidates=len(found.pairs),
        seconds=time.perf_counter() - started,
    )
