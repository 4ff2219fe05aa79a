"""A round's estimate, computed after it has published its ranking: the cross-validated
accuracy (overall and per class), the temperature that calibrates its probabilities, and
the held-out predictions auto-labels are chosen on (autolabel/plan.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def estimate(learner, fitted, ids: Sequence[int], labels: Sequence[int],
             pool_ids: Sequence[int] | None = None) -> None:
    """Cross-validated accuracy, overall and per class, into `fitted`. The estimate is
    the head's, on the frozen embeddings, in both modes: cross-validating a fine-tune
    would cost k more fine-tunes; the head's is a fair guide to the tuned net's. With
    label spreading, each fold's held-out images get the blend, spread from the other
    folds' labels only. With `pool_ids`, each fold's model predicts them too, blended
    the same way (fitted.pool_held_out: their mean)."""
    from .calibration import expected_calibration_error, fit_temperature
    from .head import out_of_fold

    ids = np.asarray(ids, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    blend, fold_spread = None, {}
    if fitted.spread is not None:
        from .spreading import spread_for

        def blend(train, test, head_probs, classes):
            spread = spread_for(fitted.node_ids, fitted.graph, ids[train], labels[train],
                                [int(c) for c in classes])
            fold_spread["now"] = spread  # the pool of this fold blends with it too
            return spread.mix(ids[test], head_probs)

    pool = np.asarray(pool_ids if pool_ids is not None else [], dtype=np.int64)
    pool_sum: dict[int, np.ndarray] = {}

    def on_fold(model, _train):
        probs = model.predict_proba(learner.embedding_rows(pool))
        if "now" in fold_spread:
            probs = fold_spread["now"].mix(pool, probs)
        for column, class_id in enumerate(model.classes_):
            pool_sum[int(class_id)] = pool_sum.get(int(class_id), 0.0) + probs[:, column]

    held_out = out_of_fold(learner.embeddings(ids), labels, seed=learner.config.seed,
                           projection=fitted.projection, blend=blend,
                           on_fold=on_fold if len(pool) else None)
    if held_out is None:
        fitted.cv_accuracy, fitted.per_class_accuracy = None, {}
        return
    rows, y, probs, classes = held_out
    predicted = classes[probs.argmax(axis=1)]
    fitted.cv_accuracy = float(np.mean(predicted == y))
    fitted.per_class_accuracy = {int(c): float(np.mean(predicted[y == c] == c))
                                 for c in classes}
    # One temperature on the same held-out predictions: the probabilities a round
    # publishes are rescaled by it (calibration.py), so "90 % sure" means 90 % right.
    right = predicted == y
    fitted.temperature = fit_temperature(probs, np.searchsorted(classes, y))
    from .calibration import apply_temperature

    calibrated = apply_temperature(probs, fitted.temperature)
    fitted.calibration_error = (expected_calibration_error(probs, right),
                                expected_calibration_error(calibrated, right))
    fitted.held_out = (ids[rows], y, calibrated, classes)
    if len(pool):
        summed = np.column_stack([pool_sum.get(int(c), np.zeros(len(pool)))
                                  for c in classes])
        fitted.pool_held_out = apply_temperature(
            summed / summed.sum(axis=1, keepdims=True), fitted.temperature)
