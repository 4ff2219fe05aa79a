"""The learner: embed images (cached), fit a head or fine-tune, predict probabilities."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cache import EmbeddingCache, save_npz_atomically

MODES = ("auto", "head", "finetune")
Progress = Callable[[float, str], None]


class LearnerError(Exception):
    """A round that cannot train, with the reason for the person who asked for it."""


@dataclass
class LearnerConfig:
    backbone: str = "efficientnet_lite0"
    checkpoint: str | None = None
    pretrained: bool = True
    input_size: int = 64
    input_size_reason: str = ""  # how input_size was chosen, for the round's summary
    batch_size: int = 64
    workers: int | None = None  # loader processes beside the forward pass; None: by cores
    mode: str = "auto"
    semi_supervised: bool = False  # label spreading blended in (projects: on by default)
    max_graph_images: int = 200_000  # graph.MAX_NODES: more images, no spreading
    device: str = "auto"
    max_pixels: int = 40_000_000
    epochs: int = 8
    seed: int = 0

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            return "cpu"  # a CUDA setting on a machine without one falls back cleanly
        return self.device

    def resolved_workers(self) -> int:
        from .data import default_workers

        return default_workers() if self.workers is None or self.workers < 0 else self.workers

    def resolved_mode(self) -> str:
        if self.mode not in MODES:
            raise LearnerError(f"unknown training mode {self.mode!r}; use one of {MODES}")
        if self.mode == "auto":
            return "finetune" if self.resolved_device().startswith("cuda") else "head"
        return self.mode


@dataclass
class FitResult:
    mode: str
    class_ids: list[int]  # the columns of predicted probabilities, in order
    model: object = field(repr=False)
    cv_accuracy: float | None = None
    per_class_accuracy: dict[int, float] = field(default_factory=dict)
    labels_used: int = 0
    projection: object = field(default=None, repr=False)  # the head's feature projection
    # The spreading.Spread when semi-supervised, as a Future: it is computed in a thread
    # beside the head's fit and the pool's scoring (see `spread`).
    spreading: Future | None = field(default=None, repr=False)
    graph: object = field(default=None, repr=False)  # the spreading operator it used
    node_ids: object = field(default=None, repr=False)  # the images spread over
    notes: list[str] = field(default_factory=list)  # for the round's summary
    temperature: float | None = None  # fitted on out-of-fold predictions (estimate)
    calibration_error: tuple[float, float] | None = None  # held-out ECE before, after
    # (image ids, their labels, calibrated held-out probabilities, the classes of its
    # columns): what auto-label thresholds are chosen on (autolabel/plan.py).
    held_out: tuple | None = field(default=None, repr=False)
    # The pool predicted by the same held-out models (their mean, calibrated, columns as
    # held_out's classes): what auto-labels are given from, so that the thresholds chosen on
    # held_out apply to predictions of the same kind.
    pool_held_out: np.ndarray | None = field(default=None, repr=False)


    @property
    def spread(self):
        """The label spreading's result (spreading.Spread), None without spreading. Waits for
        the thread computing it: the spread's sparse products (0.15 s at 100,000 images) run
        beside the head's fit and scoring, which let go of the GIL in numpy, instead of
        after them."""
        return self.spreading.result() if self.spreading is not None else None


def _no_progress(_fraction: float, _message: str) -> None:
    return None


class Learner:
    def __init__(self, config: LearnerConfig, cache_root: Path):
        self.config = config
        self.cache_root = Path(cache_root)
        self._model = None
        self._data_config = None
        self._graph = None  # the neighbour graph of the latest fit

    # -- backbone ---------------------------------------------------------------------
    def backbone(self):
        if self._model is None:
            from .backbone import create_backbone

            self._model = create_backbone(
                self.config.backbone, self.config.checkpoint, self.config.pretrained
            ).eval()
        return self._model

    def data_config(self) -> dict:
        if self._data_config is None:
            import timm.data

            self._data_config = timm.data.resolve_data_config({}, model=self.backbone())
        return self._data_config

    def cache(self) -> EmbeddingCache:
        if self.config.checkpoint and not Path(self.config.checkpoint).is_file():
            self.backbone()  # first: it reports a missing checkpoint clearly
        # Keyed by the timm architecture that makes the features, not the setting's name:
        # efficientnet_lite0 was once built as timm's efficientnet_lite0 (symmetric padding),
        # now as tf_efficientnet_lite0, and the old cache must not be mixed with the new.
        from .catalog import architecture

        built = architecture(self.config.backbone, self.config.checkpoint, self.config.pretrained)
        name = f"{built}-{self.config.input_size}{self._weights_tag()}"
        folder = self.cache_root / "embeddings" / name
        # A cache that exists knows its width: a job whose embeddings are all cached (each
        # runs in a fresh process) then never builds the network, nor imports timm.
        dim = EmbeddingCache.stored_dim(folder) or self.backbone().num_features
        return EmbeddingCache(folder, dim)

    def _weights_tag(self) -> str:
        """Which weights made the embeddings. A checkpoint is named by its file's stem plus
        a hash of its path, size and time, so replacing the file starts a new cache instead
        of mixing embeddings of two networks."""
        if self.config.checkpoint:
            path = Path(self.config.checkpoint).resolve()
            stat = path.stat()
            key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()
            return f"-{path.stem}-{hashlib.sha1(key).hexdigest()[:8]}"
        return "" if self.config.pretrained else "-random"

    # -- embedding ----------------------------------------------------------------------
    def missing(self, ids: Sequence[int]) -> np.ndarray:
        """The ids among `ids` with no cached embedding yet (only their files need reading)."""
        return self.cache().missing(np.asarray(ids, dtype=np.int64))

    def embed(
        self, ids: Sequence[int], paths: Sequence[str], progress: Progress = _no_progress
    ) -> list[int]:
        """Embed the images not yet in the cache. Returns the ids whose files could not be
        read (they stay out of the cache, and out of the round)."""
        from .data import run_model

        cache = self.cache()
        ids = np.asarray(ids, dtype=np.int64)
        todo = set(cache.missing(ids).tolist())
        order = [i for i, image_id in enumerate(ids) if int(image_id) in todo]
        if not order:
            progress(1.0, "all embeddings cached")
            return []
        failed: list[int] = []
        cache.reserve(int(ids[order].max()))

        def store(batch_ids: np.ndarray, features: np.ndarray, _logits) -> None:
            cache.put(batch_ids, features)

        failed = run_model(
            self.backbone(),
            [int(ids[i]) for i in order],
            [paths[i] for i in order],
            self.config,
            self.data_config(),
            store,
            progress,
            classifier=False,
        )
        cache.flush()
        return failed

    def embeddings(self, ids: Sequence[int], dtype=np.float32) -> np.ndarray:
        """Cached embeddings of `ids`; embed() them first."""
        return np.asarray(self.embedding_rows(ids, dtype))

    def embedding_rows(self, ids: Sequence[int], dtype=np.float16):
        """The cached embeddings of `ids` as rows read when indexed (cache.CachedRows), not
        copied now; embed() them first."""
        try:
            return self.cache().rows(np.asarray(ids, dtype=np.int64), dtype)
        except KeyError as exc:
            raise LearnerError(f"{exc.args[0]}; embed them first") from None

    # -- fitting ------------------------------------------------------------------------
    def fit(
        self,
        ids: Sequence[int],
        paths: Sequence[str],
        labels: Sequence[int],
        progress: Progress = _no_progress,
        pool_ids: Sequence[int] | None = None,
        estimate: bool = True,
    ) -> FitResult:
        """Train on the labeled images; `pool_ids` (embedded, unlabeled) shape the head's
        projection, which needs no labels. With `estimate`, also cross-validate the accuracy
        (see `estimate`; a round does that after it has published its ranking)."""
        labels = np.asarray(labels, dtype=np.int64)
        present = sorted(set(labels.tolist()))
        if len(present) < 2:
            raise LearnerError(
                "a model needs labels in at least two classes; so far "
                + (f"only one class has labels ({len(labels)} labels)" if present else
                   "there are no labels")
            )
        mode = self.config.resolved_mode()
        from .head import HeadModel

        pool_ids = np.asarray(pool_ids if pool_ids is not None else [], dtype=np.int64)
        everything = np.union1d(np.asarray(ids, dtype=np.int64), pool_ids)
        limit = self.config.max_graph_images
        notes, spreading = [], None
        if self.config.semi_supervised and len(everything) > limit:
            notes.append(f"no label spreading: {len(everything):,} images are more than"
                         f" the neighbour graph's {limit:,}")
        elif self.config.semi_supervised:
            from .spreading import spread_for

            progress(0.1, "spreading the labels over the neighbour graph")
            node_ids, graph = self.spread_operator(everything)
            worker = ThreadPoolExecutor(1, thread_name_prefix="spread")
            spreading = worker.submit(spread_for, node_ids, graph, ids, labels, present)
            worker.shutdown(wait=False)  # the thread ends when the spread is done
        features = self.embeddings(ids)
        projection = self.projection(everything)
        if mode == "head":
            model = HeadModel.fit(features, labels, seed=self.config.seed, projection=projection)
        else:
            from .finetune import finetune

            model = finetune(self, list(paths), labels, present, progress)
        fitted = FitResult(mode=mode, class_ids=present, model=model, labels_used=len(labels),
                           projection=projection, spreading=spreading, notes=notes)
        if spreading is not None:
            fitted.node_ids, fitted.graph = node_ids, graph
        if estimate:
            self.estimate(fitted, ids, labels)
        return fitted

    def estimate(self, fitted: FitResult, ids: Sequence[int], labels: Sequence[int],
                 pool_ids: Sequence[int] | None = None) -> None:
        """Cross-validated accuracy, calibration and held-out predictions into `fitted`
        (estimate.py)."""
        from .estimate import estimate

        estimate(self, fitted, ids, labels, pool_ids)

    def prepare(self, ids: Sequence[int]) -> None:
        """Compute what needs no labels for a round over `ids` (embedded): the head's
        projection and, with label spreading, the neighbour graph and its operator. Each is
        kept on disk for the same images, so the next round over them only trains; a cold
        start does this before anyone has labeled."""
        everything = np.unique(np.asarray(ids, dtype=np.int64))
        self.projection(everything)
        if self.config.semi_supervised and len(everything) <= self.config.max_graph_images:
            self.spread_operator(everything)

    def projection(self, ids: np.ndarray):
        """The head's label-free projection fitted on `ids` (sorted), or a random sample of
        them: kept beside the cache, keyed by the images and the seed."""
        from .head import Projection, sample_rows

        folder = self.cache().folder
        key = hashlib.sha1(ids.tobytes() + str(self.config.seed).encode()).hexdigest()
        path = folder / "projection.npz"
        try:
            with np.load(path) as stored:
                if str(stored["key"]) == key:
                    return Projection(stored["mean"], stored["scale"], None)
        except (FileNotFoundError, KeyError, ValueError, OSError):
            pass
        rows = sample_rows(len(ids), self.config.seed)
        projection = Projection.fit(self.embeddings(ids[rows]), self.config.seed)
        if projection.pca is None:  # a PCA (COMPONENTS > 0) is refitted each time
            save_npz_atomically(path, key=np.array(key), mean=projection.mean,
                                scale=projection.scale)
        return projection

    def spread_operator(self, ids: Sequence[int]) -> tuple[np.ndarray, object]:
        """(sorted ids, the normalised neighbour graph among them) for label spreading: the
        graph is built once per embedding cache and extended with new images (graph.py)."""
        from .graph import NeighbourGraphStore

        cache = self.cache()
        graphs = NeighbourGraphStore(cache.folder)
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        cached = graphs.cached_operator(ids)
        if cached is not None:  # the same images as last time: the graph need not be read
            return ids, cached
        self._graph = graphs.ensure(ids, lambda chunk: cache.get(chunk, np.float16),
                                    seed=self.config.seed)
        return graphs.operator(self._graph, ids)

    def neighbour_graph(self):
        """The neighbour graph the latest spread_operator used (read from disk if it was
        not loaded: a cached operator needs no graph)."""
        if self._graph is None:
            from .graph import NeighbourGraphStore

            self._graph = NeighbourGraphStore(self.cache().folder).load()
        return self._graph

    def predict_outside(self, fitted: FitResult, ids: Sequence[int]) -> np.ndarray:
        """Probabilities for embedded images that were not in the round (a held-out test
        set): the head's, blended with the spread probabilities of their nearest images in
        the round, weighted as the graph's edges are."""
        features = self.embeddings(ids, np.float16)
        probs = fitted.model.predict_proba(features)
        if fitted.spread is None:
            return probs
        from .graph import EDGE_POWER, NEIGHBOURS, search

        graph = self.neighbour_graph()
        nodes = graph.reduced[graph.positions(fitted.spread.ids)].astype(np.float32)
        found, similarity = search(graph.reduce(features), nodes, NEIGHBOURS)
        weights = np.maximum(similarity, 0.0) ** EDGE_POWER
        spread = (weights[:, :, None] * fitted.spread.probs[found]).sum(axis=1)
        spread /= np.maximum(spread.sum(axis=1, keepdims=True), 1e-12)
        blend = fitted.spread.blend
        return (1.0 - blend) * probs + blend * spread

    def predict_proba(
        self, fitted: FitResult, ids: Sequence[int], paths: Sequence[str],
        progress: Progress = _no_progress,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities over fitted.class_ids, embeddings) for the given images. After a
        fine-tune both come from the tuned network, so strategies see its features."""
        if fitted.mode == "head":
            # Read from the cache a block at a time as they are scored (and by the strategy
            # where it looks), not copied first: a million rows are 2.5 GB.
            features = self.embedding_rows(ids)
            probs = fitted.model.predict_proba(features)
        else:
            from .finetune import predict_tuned

            probs, features = predict_tuned(self, fitted.model, list(ids), list(paths),
                                            progress)
        if fitted.spread is not None:
            probs = fitted.spread.mix(ids, probs)
        return probs, features
