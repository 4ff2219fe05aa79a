"""The default trainer: a logistic-regression head on cached embeddings (seconds a round).

The embeddings are first projected with PCA fitted on every image of the round, labeled
or not (no labels needed), which keeps the directions the data actually varies in: the
head fits faster and generalises better from few labels than on the raw features.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

MAX_FOLDS = 5
# Chosen by bench/label_efficiency.py on Fashion-MNIST (64x64 EfficientNet-Lite0 features):
# standardised features with a strongly regularised head beat PCA projections (128-512
# components, whitened or not) both at 500 labels (74.6 % vs 70-73 %) and on all 20,000
# (83.4 % vs 80.8-81.2 %). COMPONENTS > 0 turns the PCA projection back on.
# The square root of the (non-negative, mostly zero) pooled features before standardising,
# with C=0.01, then beat C=0.05 on the raw features: random batches of 20 gave 77.7 % vs
# 77.1 % at 1,000 labels, all 20,000 gave 83.5 % vs 83.4 %, and margin reached 95 % of the
# ceiling with 920-1,080 labels instead of 1,220-1,340.
COMPONENTS = 0
C = 0.01
SAMPLES_PER_COMPONENT = 4
PCA_SAMPLE = 20_000  # PCA on a sample is as good as on all, and its cost stays flat
# The standardisation's mean and spread, too, come from at most this many images: at a pool
# of a million, every extra pass over all of them costs seconds and gigabytes, and a random
# 20,000 pin each feature's mean to within about 1 % of its spread.
STATS_SAMPLE = 20_000
PREDICT_CHUNK = 32_768  # rows projected and scored at a time: memory stays flat


def _root_table() -> np.ndarray:
    """compress() of every float16 value, indexed by its bits."""
    values = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)
    with np.errstate(invalid="ignore"):
        return np.copysign(np.sqrt(np.abs(values)), values)


_ROOTS: np.ndarray | None = None


def compress(x: np.ndarray) -> np.ndarray:
    """Signed square root of the features: pooled activations are non-negative with a long
    tail, where a few large values dominate a linear head fitted on few labels; the root
    evens them out (and keeps the sign, for backbones whose features can be negative).
    float16 input (the cache's) is looked up in a table: one pass instead of four."""
    global _ROOTS
    if isinstance(x, np.ndarray) and x.dtype == np.float16:
        if _ROOTS is None:
            _ROOTS = _root_table()
        return _ROOTS[np.ascontiguousarray(x).view(np.uint16)]
    x = np.asarray(x, dtype=np.float32)
    root = np.abs(x)
    np.sqrt(root, out=root)
    return np.copysign(root, x, out=root)


@dataclass
class Projection:
    mean: np.ndarray
    scale: np.ndarray
    pca: PCA | None

    @classmethod
    def fit(cls, x: np.ndarray, seed: int = 0, components: int = COMPONENTS) -> Projection:
        """Fit on the images `x` (labeled or not: no labels needed), or on a random
        STATS_SAMPLE of them when there are more."""
        x = x[sample_rows(len(x), seed)] if len(x) > STATS_SAMPLE else x
        x = compress(x)
        mean = x.mean(axis=0)
        scale = x.std(axis=0) + 1e-6
        z = (x - mean) / scale
        # At most a quarter as many components as images: whitening rescales every kept
        # direction to unit variance, and with nearly as many directions as images the
        # trailing ones are noise (with n - 1 of n, every pair of images ends up equally
        # far apart and the head learns nothing).
        k = min(components, z.shape[0] // SAMPLES_PER_COMPONENT, z.shape[1])
        pca = None
        if components and k >= 2:
            sample = z
            if len(z) > PCA_SAMPLE:
                sample = z[np.random.default_rng(seed).choice(len(z), PCA_SAMPLE, replace=False)]
            pca = PCA(n_components=k, whiten=True, random_state=seed).fit(sample)
        return cls(mean, scale, pca)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = compress(x)
        z -= self.mean
        z /= self.scale
        return self.pca.transform(z) if self.pca is not None else z


def sample_rows(total: int, seed: int, size: int = STATS_SAMPLE) -> np.ndarray:
    """All row indices below `total`, or a sorted random `size` of them when there are more."""
    if total <= size:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size, replace=False))


def _basis(labeled: np.ndarray, unlabeled: np.ndarray | None, seed: int) -> np.ndarray:
    """The images a projection is fitted on: the labeled ones and the pool, or a sample of
    STATS_SAMPLE when there are more (without first copying a million rows together)."""
    if unlabeled is None or len(unlabeled) == 0:
        return labeled
    rows = sample_rows(len(labeled) + len(unlabeled), seed)
    cut = np.searchsorted(rows, len(labeled))
    return np.concatenate([labeled[rows[:cut]], unlabeled[rows[cut:] - len(labeled)]])


@dataclass
class HeadModel:
    projection: Projection
    classifier: LogisticRegression

    @property
    def classes_(self) -> np.ndarray:
        return self.classifier.classes_

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, unlabeled: np.ndarray | None = None,
            seed: int = 0, projection: Projection | None = None) -> HeadModel:
        # One BLAS thread: several times faster than two for problems of this size here.
        with threadpool_limits(1):
            if projection is None:
                projection = Projection.fit(_basis(x, unlabeled, seed), seed)
            # class_weight='balanced' so a rare class is not drowned by the common ones.
            classifier = LogisticRegression(
                C=C, max_iter=1000, class_weight="balanced", random_state=seed
            ).fit(projection(x), y)
        return cls(projection, classifier)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities per class. `x`: an array, or a cache's rows (cache.CachedRows, read a
        block at a time). Without PCA the standardisation is folded into the classifier's
        weights, so each row is touched once (the square root) before one matrix product:
        the same numbers as classifier.predict_proba(projection(x)), at a fraction of the
        passes."""
        if self.projection.pca is None:
            with threadpool_limits(1):  # the scoring threads share the cores instead
                scores = _folded_scores(x, *self._folded())
            return _probabilities(scores.astype(np.float64))
        out = np.empty((len(x), len(self.classes_)), dtype=np.float64)
        with threadpool_limits(1):
            for start in range(0, len(x), PREDICT_CHUNK):  # memory stays flat
                chunk = x[start:start + PREDICT_CHUNK]
                out[start:start + len(chunk)] = self.classifier.predict_proba(
                    self.projection(chunk))
        return out

    def _folded(self) -> tuple[np.ndarray, np.ndarray]:
        """Weights and bias acting on compress(x) directly: w.(z - m)/s = (w/s).z - w.(m/s)."""
        coef = self.classifier.coef_.astype(np.float64)
        scaled = coef / self.projection.scale
        bias = self.classifier.intercept_ - scaled @ self.projection.mean
        return scaled.T.astype(np.float32), bias.astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]


# Rows converted at a time: the float32 block (2.6 MB at 1,280 features) stays in a core's
# own cache. Here, 98,000 x 1,280 rows in one thread took 0.19-0.22 s in blocks of 512,
# 0.27-0.29 s in blocks of 2,048 and 0.40-0.43 s in blocks of 4,096.
SCORE_BLOCK = 512


def scoring_threads() -> int:
    """Threads that score a pool side by side (numpy lets go of the GIL while it converts,
    takes roots and multiplies): the cores this process may use, at most four."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def side_by_side(function, items) -> list:
    """[function(item) for item in items], in scoring_threads() threads with one BLAS thread
    each (head fits let go of the GIL in numpy and scipy): five fold heads on 8,000
    Fashion-MNIST labels took 6.9 s on two cores instead of 10.0 s one after another. The
    one-thread limit is taken here, around all of them: threadpoolctl's limits are the
    process's, and a fit leaving its own would lift it under its neighbour."""
    items = list(items)
    with threadpool_limits(1):
        threads = min(scoring_threads(), len(items))
        if threads < 2:
            return [function(item) for item in items]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(function, items))


def _folded_scores(x, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """compress(x) @ weights + bias, a cache-sized block of rows at a time (read from `x`
    only then, when it is a cache's rows), the square root taken on float32 in place (the
    sign put back only in a block that has negative values: pooled ReLU features have none).
    The same numbers as compress's float16 table (the table is that square root). The blocks
    are dealt to scoring_threads() threads: at 98,000 x 1,280 rows one thread took 0.28 s in
    2,048-row blocks (0.41 s with signs), where the table lookup over 32,768-row chunks took
    0.50 s (its gather writes 168 MB a chunk)."""
    scores = np.empty((len(x), weights.shape[1]), np.float32)
    starts = range(0, len(x), SCORE_BLOCK)
    threads = min(scoring_threads(), len(starts))

    def score_blocks(first: int) -> None:
        rows = min(SCORE_BLOCK, len(x))
        block = np.empty((rows, weights.shape[0]), np.float32)
        roots = np.empty((rows, weights.shape[0]), np.float32)
        for start in starts[first::threads]:
            part = x[start:start + SCORE_BLOCK]
            z = block[:len(part)]
            z[...] = part
            if z.min() < 0:
                root = roots[:len(part)]
                np.abs(z, out=root)
                np.sqrt(root, out=root)
                np.copysign(root, z, out=root)
                z = root
            else:
                np.sqrt(z, out=z)
            np.matmul(z, weights, out=scores[start:start + len(part)])

    if threads <= 1:
        if len(x):
            score_blocks(0)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(score_blocks, range(threads)))  # list(): raise what a thread raised
    scores += bias
    return scores


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """As LogisticRegression.predict_proba from decision scores: a sigmoid for two classes
    (one score column), a softmax for more."""
    if scores.shape[1] == 1:
        positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        return np.column_stack([1.0 - positive, positive])
    scores = scores - scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    return scores


def cross_validate(
    features: np.ndarray, labels: np.ndarray, unlabeled: np.ndarray | None = None, seed: int = 0,
    projection: Projection | None = None, blend=None,
) -> tuple[float | None, dict[int, float]]:
    """Accuracy estimated by stratified k-fold on the labeled images, overall and per
    class. Classes with fewer than two labels are left out of the estimate; None when
    too few labels remain to estimate anything. `blend`: see out_of_fold."""
    held_out = out_of_fold(features, labels, unlabeled, seed, projection, blend)
    if held_out is None:
        return None, {}
    _rows, y, probs, classes = held_out
    predicted = classes[probs.argmax(axis=1)]
    per_class = {int(c): float(np.mean(predicted[y == c] == c)) for c in np.unique(y)}
    return float(np.mean(predicted == y)), per_class


def out_of_fold(
    features: np.ndarray, labels: np.ndarray, unlabeled: np.ndarray | None = None, seed: int = 0,
    projection: Projection | None = None, blend=None, on_fold=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Stratified k-fold predictions for the labeled images, each from a model that did not
    see its label: (rows of `features` predicted, their labels, probabilities over
    `classes`, classes). Classes with fewer than two labels are left out; None when fewer
    than two classes remain. `blend(train, test, probs, classes)`, when given, turns the
    fold's head probabilities for the rows `test` (positions in `features`) into the
    model's final ones, knowing only the labels of the rows `train`. `on_fold(model, train)`,
    when given, is called with each fold's model once its held-out rows are predicted (and
    blended): to predict other images with the same models."""
    classes, counts = np.unique(labels, return_counts=True)
    usable = np.isin(labels, classes[counts >= 2])
    if len(np.unique(labels[usable])) < 2:
        return None
    folds = int(min(MAX_FOLDS, counts[counts >= 2].min()))
    x, y = features[usable], labels[usable]
    rows = np.flatnonzero(usable)
    classes = np.unique(y)
    if projection is None:  # label-free, so shared by the folds
        projection = Projection.fit(_basis(features, unlabeled, seed), seed)
    probs = np.zeros((len(y), len(classes)))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = HeadModel.fit(x[train], y[train], seed=seed, projection=projection)
        fold = model.predict_proba(x[test])
        if blend is not None:
            fold = blend(rows[train], rows[test], fold, model.classes_)
        probs[np.ix_(test, np.searchsorted(classes, model.classes_))] = fold
        if on_fold is not None:
            on_fold(model, rows[train])
    return rows, y, probs, classes
