"""A k-nearest-neighbour graph of the embeddings, kept beside their cache and grown with it.

Label spreading (spreading.py) passes labels along this graph to the images nobody labeled.
Building it is the costly part (every image against every other), so it is built once per
embedding cache and then only extended: a round finds neighbours for the images added since
(against all of them), and the older images reach the new ones through the symmetric edges
the spreading uses. Neighbours are found in a reduced space: the head's view of the features
(signed square root, standardised), projected by PCA to DIMENSIONS and scaled to unit
length, so similarity is a dot product. When the images outgrow twice the number the PCA
was fitted on, the graph is rebuilt from scratch (each image is then re-indexed a bounded
number of times in all).

Stored as one .npz file per cache and k, replaced atomically: a reader never sees half an
update, and two jobs updating at once (a round beside a quality run) take turns on a lock.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import file_lock, save_npz_atomically

NEIGHBOURS = 10
DIMENSIONS = 64
# Edge weight = similarity ** EDGE_POWER: near-duplicates count far more than mere
# neighbours (Iscen et al. 2019 use 3 for label propagation on CNN features).
EDGE_POWER = 3.0
BASIS_SAMPLE = 20_000
REBUILD_GROWTH = 2.0
CHUNK = 2_048  # rows reduced or searched at a time: memory stays flat at a million images
# The search is exact, every image against every other: 37 s at 100,000 images here, but an
# hour at a million. Past this many a round trains without label spreading and says so.
MAX_NODES = 200_000

VectorsOf = Callable[[np.ndarray], np.ndarray]  # image ids -> their cached embeddings


@dataclass
class Graph:
    ids: np.ndarray  # (n,) sorted image ids, the nodes
    neighbours: np.ndarray  # (n, k) image ids
    similarity: np.ndarray  # (n, k) float32 cosine similarity in the reduced space
    reduced: np.ndarray  # (n, DIMENSIONS) float16 unit vectors
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # (dim, DIMENSIONS)
    basis_size: int  # how many images the basis was fitted on

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        """Embeddings -> unit vectors in the graph's reduced space (float32)."""
        out = np.empty((len(vectors), self.components.shape[1]), np.float32)
        for start in range(0, len(vectors), CHUNK):
            chunk = np.asarray(vectors[start:start + CHUNK], dtype=np.float32)
            z = (np.copysign(np.sqrt(np.abs(chunk)), chunk) - self.mean) / self.scale
            z = z @ self.components
            z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-12
            out[start:start + len(chunk)] = z
        return out

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Rows of `ids` in the graph; every id must be a node."""
        rows = np.searchsorted(self.ids, ids)
        if len(ids) and (rows.max() >= len(self.ids) or np.any(self.ids[rows] != ids)):
            raise KeyError("some images are not in the neighbour graph")
        return rows


def search(queries: np.ndarray, base: np.ndarray, k: int,
           exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of `base` most similar to each query (unit vectors: dot products), as
    (positions, similarities), best first. `exclude[i]` is a base row query i may not take
    (itself), or -1. Exact: a matrix product and a top-k per chunk (torch's, which is several
    times faster than numpy's partition on a CPU)."""
    import torch

    k = min(k, len(base) - (0 if exclude is None else 1))
    if k <= 0:
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
    base_t = torch.from_numpy(np.ascontiguousarray(base, dtype=np.float32))
    positions = np.empty((len(queries), k), np.int64)
    similarity = np.empty((len(queries), k), np.float32)
    with torch.no_grad():
        for start in range(0, len(queries), CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(queries[start:start + CHUNK],
                                                          dtype=np.float32))
            scores = chunk @ base_t.T
            if exclude is not None:
                own = torch.from_numpy(exclude[start:start + len(chunk)])
                mine = own >= 0
                scores[torch.nonzero(mine).flatten(), own[mine]] = -float("inf")
            top = torch.topk(scores, k, dim=1)
            positions[start:start + len(chunk)] = top.indices.numpy()
            similarity[start:start + len(chunk)] = top.values.numpy()
    return positions, similarity


class NeighbourGraphStore:
    """The graph of one embedding cache, on disk in `folder`."""

    def __init__(self, folder: Path, k: int = NEIGHBOURS):
        self.folder = Path(folder)
        self.k = k
        self.path = self.folder / f"neighbours-{k}.npz"

    def load(self) -> Graph | None:
        try:
            with np.load(self.path) as stored:
                return Graph(**{name: stored[name] for name in stored.files
                                if name != "basis_size"}, basis_size=int(stored["basis_size"]))
        except FileNotFoundError:
            return None

    def ensure(self, ids, vectors_of: VectorsOf, seed: int = 0) -> Graph:
        """The graph with every id in `ids` a node (older nodes stay), extended or rebuilt
        as needed and saved."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        if len(ids) == 0:
            raise ValueError("a neighbour graph needs at least one image")
        with self._locked():
            graph = self.load()
            if graph is not None and graph.reduced.shape[1] != graph.components.shape[1]:
                graph = None
            if graph is None or len(np.union1d(graph.ids, ids)) > REBUILD_GROWTH * graph.basis_size:
                everything = ids if graph is None else np.union1d(graph.ids, ids)
                graph = self._build(everything, vectors_of, seed)
            else:
                new = np.setdiff1d(ids, graph.ids, assume_unique=True)
                if len(new) == 0:
                    return graph
                graph = self._extend(graph, new, vectors_of)
            self._save(graph)
            return graph

    def operator(self, graph: Graph, ids) -> tuple[np.ndarray, object]:
        """(sorted ids, spreading.operator of the graph among them), cached on disk: between
        two rounds over the same images only the labels change, and building it anew took a
        quarter of a second at 100,000 images."""
        from scipy import sparse

        from .spreading import operator

        ids = np.unique(np.asarray(ids, dtype=np.int64))
        cached = self.cached_operator(ids)
        if cached is not None:
            return ids, cached
        s = operator(adjacency(graph, ids))
        with self._locked():
            partial = self.folder / f"operator-{self.k}.{os.getpid()}.npz"
            sparse.save_npz(partial, s, compressed=False)
            os.replace(partial, self.folder / f"operator-{self.k}.npz")
            (self.folder / f"operator-{self.k}.key").write_text(self._operator_key(ids))
        return ids, s

    def cached_operator(self, ids: np.ndarray):
        """The stored operator when it was built for exactly these sorted ids from the graph
        as it is on disk now (so every id is a node), else None: a round over the same
        images then reads neither the graph nor its neighbours."""
        from scipy import sparse

        try:
            if (self.folder / f"operator-{self.k}.key").read_text() == self._operator_key(ids):
                return sparse.load_npz(self.folder / f"operator-{self.k}.npz")
        except (FileNotFoundError, ValueError, OSError):
            pass
        return None

    def _operator_key(self, ids: np.ndarray) -> str:
        import hashlib

        stamp = self.path.stat().st_mtime_ns
        return hashlib.sha1(ids.tobytes() + f"{self.k}:{stamp}".encode()).hexdigest()

    def _build(self, ids: np.ndarray, vectors_of: VectorsOf, seed: int) -> Graph:
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(seed)
        sample = ids if len(ids) <= BASIS_SAMPLE else np.sort(
            rng.choice(ids, BASIS_SAMPLE, replace=False))
        x = np.asarray(vectors_of(sample), dtype=np.float32)
        x = np.copysign(np.sqrt(np.abs(x)), x)
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = (x - mean) / scale
        dims = max(1, min(DIMENSIONS, z.shape[0] - 1, z.shape[1]))
        components = PCA(n_components=dims, random_state=seed).fit(z).components_.T
        graph = Graph(ids=np.zeros(0, np.int64), neighbours=np.zeros((0, self.k), np.int64),
                      similarity=np.zeros((0, self.k), np.float32),
                      reduced=np.zeros((0, dims), np.float16), mean=mean.astype(np.float32),
                      scale=scale.astype(np.float32),
                      components=components.astype(np.float32), basis_size=len(ids))
        return self._extend(graph, ids, vectors_of)

    def _extend(self, graph: Graph, new: np.ndarray, vectors_of: VectorsOf) -> Graph:
        reduced_new = np.concatenate([
            graph.reduce(vectors_of(new[start:start + 50_000]))
            for start in range(0, len(new), 50_000)]) if len(new) else np.zeros((0, 1))
        ids = np.concatenate([graph.ids, new])
        order = np.argsort(ids, kind="stable")
        reduced = np.concatenate([graph.reduced.astype(np.float32), reduced_new])
        # The new images' neighbours among all nodes, the new ones included.
        own = np.arange(len(graph.ids), len(ids))
        found, similarity = search(reduced_new, reduced, self.k, exclude=own)
        neighbour_ids = ids[found]
        k = self.k
        pad = k - neighbour_ids.shape[1]
        if pad:  # fewer images than k + 1: the missing neighbours are marked -1
            neighbour_ids = np.pad(neighbour_ids, ((0, 0), (0, pad)), constant_values=-1)
            similarity = np.pad(similarity, ((0, 0), (0, pad)), constant_values=0.0)
        old_neighbours = graph.neighbours
        old_similarity = graph.similarity
        return Graph(
            ids=ids[order],
            neighbours=np.concatenate([old_neighbours, neighbour_ids])[order],
            similarity=np.concatenate([old_similarity, similarity])[order].astype(np.float32),
            reduced=reduced[order].astype(np.float16),
            mean=graph.mean, scale=graph.scale, components=graph.components,
            basis_size=graph.basis_size,
        )

    def _save(self, graph: Graph) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_npz_atomically(self.path, ids=graph.ids, neighbours=graph.neighbours,
                            similarity=graph.similarity, reduced=graph.reduced,
                            mean=graph.mean, scale=graph.scale, components=graph.components,
                            basis_size=np.int64(graph.basis_size))

    def _locked(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        return file_lock(self.folder / "neighbours.lock")


def adjacency(graph: Graph, ids: np.ndarray, power: float = EDGE_POWER):
    """The symmetric weighted adjacency (scipy CSR, rows and columns in the order of `ids`)
    among `ids`: an edge where either image is among the other's k nearest, weighted by
    similarity ** power (negative similarity: no edge). Edges to images outside `ids` are
    dropped."""
    from scipy import sparse

    ids = np.asarray(ids, dtype=np.int64)
    rows = graph.positions(ids)
    neighbours = graph.neighbours[rows]
    weights = np.maximum(graph.similarity[rows], 0.0) ** power
    # Neighbour ids -> their positions in `ids` (or -1 outside it).
    sorter = np.argsort(ids)
    at = np.searchsorted(ids, neighbours, sorter=sorter)
    at = np.minimum(at, len(ids) - 1)
    inside = ids[sorter[at]] == neighbours
    target = np.where(inside, sorter[at], -1)
    keep = inside & (weights > 0)
    source = np.repeat(np.arange(len(ids)), neighbours.shape[1]).reshape(neighbours.shape)
    w = sparse.csr_matrix((weights[keep], (source[keep], target[keep])),
                          shape=(len(ids), len(ids)))
    return w.maximum(w.T).tocsr()
