"""The cold start: what to label first when no model exists yet, from the embeddings alone.

TypiClust (Hacohen, Dekel & Weinshall, ICML 2022): cluster the pool into as many clusters as
the batch has images and take from each cluster its most typical image, the one in the
densest part of it (highest inverse mean distance to its nearest neighbours within the
cluster). With pretrained features and a budget of a few labels per class, typical images
teach a model more than random ones or uncertain ones (a model that knows nothing is
uncertain about outliers first); the larger clusters go first, so the common kinds of image
are covered before the rare ones.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from .diverse import cluster_features
from .registry import Ranking, register

NEIGHBOURS = 20  # the paper's k for typicality
# A whole-pool ranking (k = the pool) is cut into at most this many clusters, taken in
# turns: beyond the first batches the next round's model ranks the pool anyway.
MAX_CLUSTERS = 500
KMEANS_LIMIT = 50  # up to this many clusters full k-means; more: mini-batch k-means


@register("typiclust")
def query_typiclust(
    probs: np.ndarray | None, embeddings: np.ndarray | None, k: int, rng: np.random.Generator
) -> Ranking:
    """The most typical image of each of k k-means clusters, largest first (no model needed)."""
    if embeddings is None:
        raise ValueError("typiclust needs the pool's embeddings")
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    points = cluster_features(embeddings, rng)
    distinct = len(np.unique(points, axis=0))
    clusters_wanted = max(1, min(k, MAX_CLUSTERS, distinct))
    seed = int(rng.integers(2**31))
    if clusters_wanted <= KMEANS_LIMIT:
        kmeans = KMeans(n_clusters=clusters_wanted, n_init=1, random_state=seed)
    else:
        kmeans = MiniBatchKMeans(n_clusters=clusters_wanted, n_init=1, random_state=seed,
                                 batch_size=4096)
    clusters = kmeans.fit_predict(points)
    typicality = _typicality(points, clusters)
    # Within a cluster, most typical first; clusters take turns, the largest first.
    sizes = np.bincount(clusters, minlength=clusters_wanted)
    within = np.empty(n, dtype=np.int64)
    order = np.lexsort((-typicality, clusters))
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    within[order] = np.arange(n) - np.repeat(starts, sizes)
    ranking = np.lexsort((-sizes[clusters], within))[: min(k, n)]
    # Scores fall with the turn an image is taken in, then with its cluster's size.
    scores = 1.0 / (1.0 + within[ranking]) + sizes[clusters[ranking]] / (n * (n + 1.0))
    return ranking, scores


def _typicality(points: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """1 / mean distance to the NEIGHBOURS nearest points of the same cluster (a cluster of
    one: 0). Points are unit length, so distances come from one matrix product per cluster;
    a very large cluster is measured against a random sample of itself."""
    typicality = np.zeros(len(points))
    for cluster in np.unique(clusters):
        members = np.flatnonzero(clusters == cluster)
        if len(members) < 2:
            continue
        x = points[members]
        reference = x if len(x) <= 5_000 else x[np.linspace(0, len(x) - 1, 5_000).astype(int)]
        neighbours = min(NEIGHBOURS, len(reference) - 1)
        for start in range(0, len(x), 2_048):
            chunk = x[start:start + 2_048]
            squared = np.maximum(2.0 - 2.0 * chunk @ reference.T, 0.0)
            # The nearest is the point itself (distance 0) where it is in the reference.
            nearest = np.partition(squared, neighbours, axis=1)[:, 1:neighbours + 1]
            mean = np.sqrt(nearest).mean(axis=1)
            typicality[members[start:start + len(chunk)]] = 1.0 / (mean + 1e-6)
    return typicality
