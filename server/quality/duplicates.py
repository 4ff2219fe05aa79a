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

Pairs that pass become edges; groups are their connected components (union-find). The
fingerprints themselves are computed in fingerprints.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .fingerprints import THUMB, Fingerprints, fingerprints  # noqa: F401 (part of this API)

Progress = Callable[[float, str], None]
HASHES = ("phash", "dhash", "whash")
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
