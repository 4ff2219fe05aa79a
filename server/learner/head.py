"""The default trainer: a logistic-regression head on cached embeddings (seconds a round).

The embeddings are first projected with PCA fitted on every image of the round, labeled
or not (no labels needed), which keeps the directions the data actually varies in: the
head fits faster and generalises better from few labels than on the raw features.
"""

from __future__ import annotations

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


def compress(x: np.ndarray) -> np.ndarray:
    """Signed square root of the features: pooled activations are non-negative with a long
    tail, where a few large values dominate a linear head fitted on few labels; the root
    evens them out (and keeps the sign, for backbones whose features can be negative)."""
    x = np.asarray(x, dtype=np.float32)
    return np.sign(x) * np.sqrt(np.abs(x))


@dataclass
class Projection:
    mean: np.ndarray
    scale: np.ndarray
    pca: PCA | None

    @classmethod
    def fit(cls, x: np.ndarray, seed: int = 0, components: int = COMPONENTS) -> Projection:
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
        z = (compress(np.asarray(x, dtype=np.float32)) - self.mean) / self.scale
        return self.pca.transform(z) if self.pca is not None else z


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
                basis = x if unlabeled is None else np.concatenate([x, unlabeled])
                projection = Projection.fit(basis, seed)
            # class_weight='balanced' so a rare class is not drowned by the common ones.
            classifier = LogisticRegression(
                C=C, max_iter=1000, class_weight="balanced", random_state=seed
            ).fit(projection(x), y)
        return cls(projection, classifier)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        with threadpool_limits(1):
            return self.classifier.predict_proba(self.projection(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]


def cross_validate(
    features: np.ndarray, labels: np.ndarray, unlabeled: np.ndarray | None = None, seed: int = 0
) -> tuple[float | None, dict[int, float]]:
    """Accuracy estimated by stratified k-fold on the labeled images, overall and per
    class. Classes with fewer than two labels are left out of the estimate; None when
    too few labels remain to estimate anything."""
    classes, counts = np.unique(labels, return_counts=True)
    usable = np.isin(labels, classes[counts >= 2])
    if len(np.unique(labels[usable])) < 2:
        return None, {}
    folds = int(min(MAX_FOLDS, counts[counts >= 2].min()))
    x, y = features[usable], labels[usable]
    basis = features if unlabeled is None else np.concatenate([features, unlabeled])
    projection = Projection.fit(basis, seed)  # label-free, so shared by the folds
    predicted = np.empty_like(y)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = HeadModel.fit(x[train], y[train], seed=seed, projection=projection)
        predicted[test] = model.predict(x[test])
    per_class = {int(c): float(np.mean(predicted[y == c] == c)) for c in np.unique(y)}
    return float(np.mean(predicted == y)), per_class
