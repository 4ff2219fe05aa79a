"""The model side: a timm backbone, an embedding cache, a head or a fine-tuned network,
and predicted probabilities. Knows nothing of Flask or SQL: it is handed image paths and
labels, and hands back arrays.

    learner = Learner(LearnerConfig(...), cache_dir)
    learner.embed(ids, paths, progress)          # cached, incremental
    fitted = learner.fit(ids, paths, labels)     # head on embeddings, or fine-tune
    probs = learner.predict_proba(fitted, ids, paths)
"""

from __future__ import annotations

from .core import FitResult, Learner, LearnerConfig, LearnerError

__all__ = ["FitResult", "Learner", "LearnerConfig", "LearnerError"]
