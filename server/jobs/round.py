"""One training round, start to end: snapshot the labels, embed, train, predict the pool,
rank it with the project's strategy, publish the ranking, then estimate its accuracy. No
Flask here: the worker (huey), the CLI and the benches call `run_round`; the job's life
around it (start, heartbeat, progress, failure) is runner.py's."""

from __future__ import annotations

import time
import traceback

import numpy as np

from .. import store
from ..config import Project
from ..learner import Learner, LearnerError
from ..learner.setup import make_learner
from ..store import job_rows
from ..store import rounds as round_store
from ..store.images import paths_of
from .runner import ROUND, Progress, run_job

STAGES = {"embed": (0.0, 0.6), "fit": (0.6, 0.8), "predict": (0.8, 0.95), "rank": (0.95, 1.0)}


def run(project: Project, job_id: int, started: bool = False) -> dict:
    return run_round(project, job_id, started=started)


def run_round(project: Project, round_id: int, learner: Learner | None = None,
              started: bool = False) -> dict:
    """Run a queued round. On any failure the round is marked failed with its reason and the
    previous ranking keeps serving; the error is re-raised for the caller's log. A round
    that is not queued (a duplicate job, or one marked failed meanwhile) is left alone:
    StoreError. `started`: see runner.run_job."""
    return run_job(project, ROUND, round_id, STAGES,
                   lambda db, progress: _rank(db, project, round_id, progress, learner),
                   started)


def _rank(db, project: Project, round_id: int, progress: Progress,
          learner: Learner | None) -> dict:
    import strategies

    started = time.monotonic()
    row = job_rows.get(db, ROUND.table, round_id)
    strategy = strategies.get_strategy(row["strategy"])
    learner = learner or make_learner(project)
    # Consensus first: refit how far each annotator is trusted, so the labels this
    # round trains on are the current weighted consensus.
    from ..annotators import fit_annotator_model

    fit_annotator_model(db)
    given = round_store.snapshot(db, auto_labels=project.config.train_on_auto_labels)
    if not len(given.pool_ids) and len(set(given.labels.tolist())) < 2:
        raise LearnerError("no unlabeled images are left to rank, and no model can be trained"
                           " (labels in fewer than two classes)")
    everything = np.concatenate([given.labeled_ids, given.pool_ids])
    missing = learner.missing(everything)  # only their files are read, so their paths
    failed = learner.embed(missing, paths_of(db, missing), progress.stage("embed"))
    given = given.without(failed) if failed else given
    labeled, labels, pool = given.labeled_ids, given.labels, given.pool_ids
    if len(set(labels.tolist())) < 2:
        return _cold_start(db, project, round_id, learner, labeled, labels, pool, progress,
                           started, len(failed))
    # A fine-tune reads the files (of the labeled images, then of the pool); the head only
    # the cached embeddings.
    tuning = learner.config.resolved_mode() == "finetune"
    progress.stage("fit")(0.0, f"training on {len(labeled)} labels")
    fitted = learner.fit(labeled, paths_of(db, labeled) if tuning else None, labels,
                         progress.stage("fit"), pool_ids=pool, estimate=False)
    # The estimate, and the held-out predictions auto-label thresholds are chosen on, are of
    # people's labels alone: the model's own labels would vouch for themselves.
    people = ~given.by_model if given.by_model is not None else np.ones(len(labeled), bool)
    if not people.all():
        fitted.notes.append(f"trained on {int((~people).sum())} auto-labels too"
                            " (train_on_auto_labels)")
    if len(pool):
        progress.stage("predict")(0.0, f"predicting {len(pool)} images")
        probs, embeddings = learner.predict_proba(
            fitted, pool, paths_of(db, pool) if tuning else None, progress.stage("predict"))
        progress.stage("rank")(0.0, f"ranking with {row['strategy']}")
        rng = np.random.default_rng([project.config.seed, round_id])
        order, scores = strategies.rank_pool(strategy, probs, embeddings,
                                             project.config.round_batch(), rng)
    else:  # every image is labeled: the model is trained and measured, nothing is ranked
        probs = np.zeros((0, len(fitted.class_ids)))
        order, scores = np.zeros(0, np.int64), np.zeros(0)
    summary = publish(db, round_id, pool, fitted, probs, order, scores, started,
                      len(failed), input_note=learner.config.input_size_reason,
                      extra_note="" if len(pool) else
                      "nothing left to rank: every image is labeled")
    return _estimate(db, round_id, learner, fitted, labeled[people], labels[people], summary,
                     started, pool, probs)


COLD_START = "typiclust"


def _cold_start(db, project: Project, round_id: int, learner: Learner, labeled: np.ndarray,
                labels: np.ndarray, pool: np.ndarray, progress: Progress, started: float,
                unreadable: int) -> dict:
    """No model can be trained yet (labels in fewer than two classes): order the queue by
    the embeddings alone, the most typical image of each cluster first (strategies/
    typical.py), so the first labels cover the kinds of image the pool holds. The round
    publishes that ranking with no predictions."""
    import strategies

    progress.stage("rank")(0.0, "preparing the neighbour graph (once for these images)")
    learner.prepare(np.concatenate([labeled, pool]))
    progress.stage("rank")(0.5, f"cold start: ranking {len(pool)} images with {COLD_START}")
    embeddings = learner.embeddings(pool, np.float16)
    rng = np.random.default_rng([project.config.seed, round_id])
    order, scores = strategies.rank_pool(strategies.get_strategy(COLD_START), None, embeddings,
                                         project.config.round_batch() or 20, rng)
    classes = len(set(labels.tolist()))
    reason = (f"labels in {classes} class" if classes == 1 else "no labels") + " yet"
    summary = publish(db, round_id, pool, None, None, order, scores, started, unreadable,
                      labels_used=len(labeled), input_note=learner.config.input_size_reason)
    summary["message"] = "; ".join([
        f"cold start ({reason}): no model; the queue starts with the most typical image of"
        f" each cluster ({COLD_START})",
        *([f"{unreadable} images could not be read"] if unreadable else []),
        *([f"input {learner.config.input_size_reason}"] if learner.config.input_size_reason
          else []),
    ])
    round_store.record_estimate(db, round_id, None, {}, summary["message"])
    return summary


def _estimate(db, round_id: int, learner: Learner, fitted, labeled: np.ndarray,
              labels: np.ndarray, summary: dict, started: float, pool: np.ndarray,
              probs: np.ndarray) -> dict:
    """The cross-validated accuracy, computed once annotators already have the new ranking
    (it takes longer than the rest of a head round). A failure here leaves the round done,
    with no estimate and the reason in its message."""
    try:
        learner.estimate(fitted, labeled, labels, pool_ids=pool)
    except Exception as exc:  # the ranking is published; only the estimate is missing
        traceback.print_exc()
        summary["message"] = f"done; no accuracy estimate: {type(exc).__name__}: {exc}"
        round_store.record_estimate(db, round_id, None, {}, summary["message"])
        return summary
    classes = {c["id"]: c["name"] for c in store.classes(db)}
    summary["accuracy"] = fitted.cv_accuracy
    summary["per_class"] = {classes[c]: a for c, a in fitted.per_class_accuracy.items()}
    if fitted.temperature is not None and len(pool):
        try:
            _record_held_out(db, round_id, fitted)
            _recalibrate(db, round_id, pool, probs, fitted)
            _record_auto_ready(db, round_id, pool, fitted)
            summary["temperature"] = fitted.temperature
            summary["calibration_error"] = fitted.calibration_error
        except Exception:  # published and measured: only the rescaling is missing
            traceback.print_exc()
    summary["seconds"] = round(time.monotonic() - started, 2)
    round_store.record_estimate(db, round_id, fitted.cv_accuracy, summary["per_class"], None,
                                summary["seconds"])
    return summary


def _record_held_out(db, round_id: int, fitted) -> None:
    """Keep the calibrated held-out predictions: auto-label thresholds are chosen on them
    (autolabel/plan.py). Stored before the temperature, which tells that they are there."""
    from ..store.auto_labels import record_held_out

    ids, given, probs, classes = fitted.held_out
    record_held_out(db, round_id, ids, given, classes[probs.argmax(axis=1)], probs.max(axis=1))


def _record_auto_ready(db, round_id: int, pool: np.ndarray, fitted) -> None:
    """For the learning curve: how many pool images the model could label now at the latest
    auto-label run's target (else, or when that run finished the dataset, DEFAULT_TARGET),
    planned as `activelabel autolabel` would (autolabel/plan.py) on the arrays at hand."""
    from ..autolabel.plan import DEFAULT_TARGET, HeldOut, Pool, plan
    from ..store.auto_labels import latest_run

    ids, given, probs, classes = fitted.held_out
    latest = latest_run(db)
    # A finishing run's target is the dataset's share right, not a precision to plan at.
    target = latest["target"] if latest and not latest["finish"] else DEFAULT_TARGET
    pooled = fitted.pool_held_out
    made = plan(target, HeldOut(given, classes[probs.argmax(axis=1)], probs.max(axis=1)),
                Pool(pool, classes[pooled.argmax(axis=1)], pooled.max(axis=1)), classes)
    round_store.record_auto_ready(db, round_id, made.count, target)


def _recalibrate(db, round_id: int, pool: np.ndarray, probs: np.ndarray, fitted) -> None:
    """Rescale the published confidences by the temperature the estimate fitted on held-out
    predictions (learner/calibration.py): the ranking stays as published (one temperature
    hardly moves an order by margin), the confidence a card and a grid show becomes one
    that held-out labels bear out."""
    from ..learner.calibration import apply_temperature

    confidence = apply_temperature(probs, fitted.temperature).max(axis=1)
    classes = np.asarray(fitted.held_out[3])
    held_out = fitted.pool_held_out
    round_store.record_calibration(db, round_id, pool, confidence,
                                   fitted.temperature, *fitted.calibration_error,
                                   held_out_class_ids=classes[held_out.argmax(axis=1)],
                                   held_out_confidence=held_out.max(axis=1))


def publish(db, round_id: int, pool: np.ndarray, fitted, probs: np.ndarray | None,
            order: np.ndarray, scores: np.ndarray, started: float, unreadable: int = 0,
            labels_used: int | None = None, input_note: str = "", extra_note: str = "") -> dict:
    """Store the ranking (and the predictions, when a model made `probs`; a cold start has
    neither `fitted` nor `probs`) and switch the queue to it."""
    ids = np.asarray(pool, dtype=np.int64)
    ranks = np.empty(len(pool), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    full_scores = np.zeros(len(pool))
    full_scores[order] = scores
    classes = {c["id"]: c["name"] for c in store.classes(db)}
    summary = {
        "labels_used": fitted.labels_used if fitted is not None else labels_used,
        "accuracy": fitted.cv_accuracy if fitted is not None else None,
        "per_class": ({classes[c]: a for c, a in fitted.per_class_accuracy.items()}
                      if fitted is not None else {}),
        "mode": fitted.mode if fitted is not None else "cold start",
        "seconds": round(time.monotonic() - started, 2),
    }
    notes = [extra_note] if extra_note else []
    notes += fitted.notes if fitted is not None else []
    if unreadable:
        summary["unreadable"] = unreadable
        notes.append(f"{unreadable} images could not be read and were left out")
    if input_note:
        summary["input_size"] = input_note
        notes.append(f"input {input_note}")
    if notes:
        summary["message"] = "; ".join(["done", *notes])
    if probs is None:
        predicted = np.full(len(pool), None, dtype=object)
        confidence = np.full(len(pool), None, dtype=object)
    else:
        predicted = np.asarray(fitted.class_ids)[probs.argmax(axis=1)]
        confidence = probs.max(axis=1)
    round_store.publish_round(db, round_id, ids, predicted, confidence, full_scores, ranks,
                              summary)
    # From the round's start until annotators had the new queue (the stored predictions and
    # the switch included); "seconds" grows with the estimate that follows.
    summary["ranked_seconds"] = round(time.monotonic() - started, 2)
    return summary
