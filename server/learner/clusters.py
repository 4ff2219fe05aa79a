"""Grouping images that look alike, from their embeddings: the cluster bootstrap's maths.

Plain numpy and scikit-learn; knows nothing of the server. Embeddings are evened out (signed
square root, as the head does), scaled to unit length (cosine geometry, which suits CNN
features) and projected onto their main PCA directions; then Ward's agglomerative
clustering groups up to WARD_LIMIT images (its distance matrix grows with the square of
the pool), MiniBatchKMeans any more. Within a cluster, members are ordered by distance to
the cluster's centre, so the typical images come first and the odd ones out last; clusters
are numbered tightest first (on Fashion-MNIST the tight ones are the pure ones: showing them
first doubled the labels per keystroke of a 2,000-label budget against largest first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import AgglomerativeClustering, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

WARD_LIMIT = 20_000
COMPONENTS = 50  # PCA directions kept: enough for the groups, cheap for Ward's distances
PCA_SAMPLE = 20_000  # the projection is fitted on at most this many rows
CHUNK = 50_000  # rows transformed at a time: memory stays flat for a big pool
SILHOUETTE_SAMPLE = 2_000
# The suggestion is the largest k whose silhouette is at least this share of the best one:
# silhouette favours few, broad clusters, while labeling wants pure ones, and purity keeps
# rising with k long after the silhouette has peaked. Where the silhouette is flat (CNN
# embeddings of Fashion-MNIST or the demo's digits) that is the top of the range; where
# there is a clear best (the digits' pixels) it stays near it.
SILHOUETTE_TOLERANCE = 0.9
MAX_K = 1_000
SMALL = 5  # clusters smaller than this come last: a pure pair is few labels per keystroke


@dataclass
class Clusters:
    """The outcome for n images: row i is in cluster `labels[i]` at `positions[i]`."""

    labels: np.ndarray  # cluster number per row; 0 is the tightest cluster
    positions: np.ndarray  # rank within its cluster, 0 = nearest the centre
    distances: np.ndarray  # distance to its cluster's centre (in the projected space)
    method: str  # ward | minibatch-kmeans
    k: int
    suggested_k: int | None = None
    silhouettes: dict[int, float] = field(default_factory=dict)


def prepare(x: np.ndarray, seed: int = 0, components: int = COMPONENTS) -> np.ndarray:
    """Embeddings (n x d, any float dtype) -> float32 points to cluster (n x <= components).
    The signed square root evens out pooled activations' long tail, unit length makes
    the comparison about direction, and PCA keeps the directions the pool varies in."""
    n = len(x)
    if n == 0:
        return np.zeros((0, 0), np.float32)

    def evened(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float32)
        rows = np.copysign(np.sqrt(np.abs(rows)), rows)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / np.maximum(norms, 1e-12)

    keep = min(components, n - 1, x.shape[1]) if n > 1 else 0
    if keep < 1:
        return evened(x)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, PCA_SAMPLE, replace=False)) if n > PCA_SAMPLE else None
    pca = PCA(keep, random_state=seed).fit(evened(x[sample] if sample is not None else x))
    return np.concatenate([
        pca.transform(evened(x[start:start + CHUNK])).astype(np.float32)
        for start in range(0, n, CHUNK)
    ])


def _fit(points: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, str]:
    if len(points) <= WARD_LIMIT:
        return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(points), "ward"
    model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3,
                            batch_size=max(1024, 3 * k))
    return model.fit_predict(points), "minibatch-kmeans"


def candidate_ks(n: int, classes: int) -> list[int]:
    """The cluster counts the suggestion compares: from twice the number of classes (a
    class often looks like several groups) to ten times it, never more than a twentieth of
    the images (or of the sample)."""
    low = max(2, 2 * classes)
    high = max(low, min(10 * classes, n // 20, MAX_K))
    if high - low <= 12:
        return list(range(low, high + 1))
    return sorted({int(round(v)) for v in np.geomspace(low, high, 13)})


def suggest_k(points: np.ndarray, classes: int, seed: int = 0,
              sample: int = SILHOUETTE_SAMPLE) -> tuple[int | None, dict[int, float]]:
    """(suggested k, silhouette per candidate k) from Ward on a seeded sample of the
    points. None when there are too few points to compare clusterings."""
    rng = np.random.default_rng(seed)
    rows = points if len(points) <= sample else points[rng.choice(len(points), sample,
                                                                  replace=False)]
    ks = [k for k in candidate_ks(len(rows), classes) if 2 <= k < len(rows)]
    if not ks:
        return None, {}
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(rows, method="ward")
    scores = {}
    for k in ks:
        labels = fcluster(tree, k, criterion="maxclust")
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(rows, labels))
    if not scores:
        return None, {}
    best = max(scores.values())
    bar = best * SILHOUETTE_TOLERANCE if best > 0 else best
    return max(k for k, score in scores.items() if score >= bar), scores


def arrange(points: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renumber clusters tightest first (smallest mean distance to their centre; clusters
    of fewer than SMALL images last) and order each one's members by distance to its
    centre. Returns (labels, positions, distances)."""
    found, first, inverse, sizes = np.unique(raw, return_index=True, return_inverse=True,
                                             return_counts=True)
    inverse = inverse.reshape(-1)
    centres = np.zeros((len(found), points.shape[1]), dtype=np.float64)
    np.add.at(centres, inverse, points)
    centres /= sizes[:, None]
    distances = np.linalg.norm(points - centres[inverse], axis=1)
    spread = np.bincount(inverse, weights=distances, minlength=len(found)) / sizes
    order = np.lexsort((first, spread, sizes < SMALL))
    renumber = np.empty(len(found), dtype=np.int64)
    renumber[order] = np.arange(len(found))
    labels = renumber[inverse]
    positions = np.empty(len(points), dtype=np.int64)
    by_cluster = np.lexsort((np.arange(len(points)), distances, labels))
    starts = np.searchsorted(labels[by_cluster], np.arange(len(found)))
    positions[by_cluster] = np.arange(len(points)) - np.repeat(starts, np.bincount(labels))
    return labels, positions, distances


def cluster(points: np.ndarray, k: int | None, classes: int, seed: int = 0) -> Clusters:
    """Cluster prepared points into k groups (None: the suggested k, else the number of
    classes). k is capped at the number of points."""
    n = len(points)
    if n < 2:
        raise ValueError(f"clustering needs at least 2 images, got {n}")
    suggested, scores = suggest_k(points, classes, seed)
    wanted = k or suggested or max(2, classes)
    wanted = max(1, min(int(wanted), n))
    raw, method = _fit(points, wanted, seed) if wanted > 1 else (np.zeros(n, np.int64), "ward")
    labels, positions, distances = arrange(points, raw)
    return Clusters(labels, positions, distances, method, int(labels.max()) + 1, suggested,
                    scores)


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Share of the points whose cluster's most common true class is their own."""
    right = 0
    for c in np.unique(labels):
        right += int(np.bincount(truth[labels == c]).max())
    return right / len(labels)
