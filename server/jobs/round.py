"""One training round, start to end: snapshot the labels, embed, train, predict the pool,
rank it with the project's strategy, publish the ranking. No Flask here: the worker (huey),
the CLI and the benches call `run_round`."""

from __future__ import annotations

import sqlite3
import threading
import time
import traceback

import numpy as np

from strategies.registry import UnknownStrategy

from .. import store
from ..config import Project
from ..learner import Learner, LearnerConfig, LearnerError
from ..store import rounds as round_store

# A running round's heartbeat comes every STALE_SECONDS / 8; silence for longer than
# STALE_SECONDS means its worker died.
STALE_SECONDS = 120


def learner_config(project: Project) -> LearnerConfig:
    config = project.config
    return LearnerConfig(
        backbone=config.backbone,
        checkpoint=config.checkpoint or None,
        pretrained=config.pretrained,
        input_size=config.input_size,
        batch_size=config.batch_size,
        workers=config.loader_workers,
        mode=config.training_mode,
        device=config.device,
        max_pixels=config.max_pixels,
        seed=config.seed,
    )


def make_learner(project: Project) -> Learner:
    return Learner(learner_config(project), project.cache_dir)


class _Reporter:
    """Maps each stage's own 0..1 progress into the round's overall progress."""

    STAGES = {"embed": (0.0, 0.6), "fit": (0.6, 0.8), "predict": (0.8, 0.95), "rank": (0.95, 1.0)}

    def __init__(self, db, round_id: int):
        self.db, self.round_id, self.last = db, round_id, 0.0

    def stage(self, name: str):
        low, high = self.STAGES[name]

        def report(fraction: float, message: str) -> None:
            now = time.monotonic()
            if now - self.last < 0.25 and fraction < 1.0:
                return  # keep the database writes few
            self.last = now
            round_store.report_progress(self.db, self.round_id, low + (high - low) * fraction,
                                        message)

        return report


class _Heartbeat:
    """Marks the round alive every few seconds from a thread, with its own connection,
    whatever stage it is in: a long silent step (a big cross-validation, a slow batch on
    a busy CPU) must not look like a dead worker to the web page (see STALE_SECONDS)."""

    def __init__(self, db_path, round_id: int, every: float = STALE_SECONDS / 8,
                 beat=round_store.heartbeat):
        # `beat(db, id)` marks the job alive: a round's by default, a clustering's too.
        self.db_path, self.round_id, self.every, self.beat = db_path, round_id, every, beat
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="round-heartbeat", daemon=True)

    def _run(self) -> None:
        db = store.connect(self.db_path, migrate=False)
        try:
            while not self.stopped.wait(self.every):
                try:
                    self.beat(db, self.round_id)
                except sqlite3.OperationalError:
                    pass  # the database stayed locked past the busy timeout: beat next time
        finally:
            db.conn.close()

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stopped.set()
        self.thread.join()


def run_round(project: Project, round_id: int, learner: Learner | None = None) -> dict:
    """Run a queued round. On any failure the round is marked failed with its reason and the
    previous ranking keeps serving; the error is re-raised for the caller's log. A round
    that is not queued (a duplicate job, or one marked failed meanwhile) is left alone:
    StoreError."""
    from ..projects import open_db

    db = open_db(project)
    try:
        round_store.start_round(db, round_id)
        with _Heartbeat(project.db_path, round_id):
            return _run_started(db, project, round_id, learner)
    finally:
        db.conn.close()


def _run_started(db, project: Project, round_id: int, learner: Learner | None) -> dict:
    started = time.monotonic()
    try:
        row = round_store.get_round(db, round_id)
        reporter = _Reporter(db, round_id)
        import strategies

        strategy = strategies.get_strategy(row["strategy"])
        learner = learner or make_learner(project)
        # Consensus first: refit how far each annotator is trusted, so the labels this
        # round trains on are the current weighted consensus.
        from ..annotators import fit_annotator_model

        fit_annotator_model(db)
        labeled, pool = round_store.snapshot(db)
        if not pool:
            raise LearnerError("no unlabeled images are left to rank")
        everything = labeled + pool
        failed = set(learner.embed([r["id"] for r in everything], [r["path"] for r in everything],
                                   reporter.stage("embed")))
        labeled = [r for r in labeled if r["id"] not in failed]
        pool = [r for r in pool if r["id"] not in failed]
        reporter.stage("fit")(0.0, f"training on {len(labeled)} labels")
        fitted = learner.fit([r["id"] for r in labeled], [r["path"] for r in labeled],
                             [r["class_id"] for r in labeled], reporter.stage("fit"),
                             pool_ids=[r["id"] for r in pool], estimate=False)
        reporter.stage("predict")(0.0, f"predicting {len(pool)} images")
        probs, embeddings = learner.predict_proba(
            fitted, [r["id"] for r in pool], [r["path"] for r in pool], reporter.stage("predict")
        )
        reporter.stage("rank")(0.0, f"ranking with {row['strategy']}")
        rng = np.random.default_rng([project.config.seed, round_id])
        order, scores = strategies.rank_pool(strategy, probs, embeddings,
                                             project.config.round_batch(), rng)
        summary = publish(db, round_id, pool, fitted, probs, order, scores, started,
                          len(failed))
    except Exception as exc:
        expected = isinstance(exc, (LearnerError, store.StoreError, UnknownStrategy))
        round_store.fail_round(db, round_id, str(exc) if expected else
                               f"{type(exc).__name__}: {exc}")
        if not expected:
            traceback.print_exc()
        raise
    return _estimate(db, round_id, learner, fitted, labeled, summary, started)


def _estimate(db, round_id: int, learner: Learner, fitted, labeled: list[dict], summary: dict,
              started: float) -> dict:
    """The cross-validated accuracy, computed once annotators already have the new ranking
    (it takes longer than the rest of a head round). A failure here leaves the round done,
    with no estimate and the reason in its message."""
    summary["ranked_seconds"] = summary["seconds"]
    try:
        learner.estimate(fitted, [r["id"] for r in labeled], [r["class_id"] for r in labeled])
    except Exception as exc:  # the ranking is published; only the estimate is missing
        traceback.print_exc()
        summary["message"] = f"done; no accuracy estimate: {type(exc).__name__}: {exc}"
        round_store.record_estimate(db, round_id, None, {}, summary["message"])
        return summary
    classes = {c["id"]: c["name"] for c in store.classes(db)}
    summary["accuracy"] = fitted.cv_accuracy
    summary["per_class"] = {classes[c]: a for c, a in fitted.per_class_accuracy.items()}
    summary["seconds"] = round(time.monotonic() - started, 2)
    round_store.record_estimate(db, round_id, fitted.cv_accuracy, summary["per_class"], None,
                                summary["seconds"])
    return summary


def publish(db, round_id: int, pool: list[dict], fitted, probs: np.ndarray,
            order: np.ndarray, scores: np.ndarray, started: float, unreadable: int = 0) -> dict:
    ids = np.array([r["id"] for r in pool], dtype=np.int64)
    columns = np.asarray(fitted.class_ids)
    ranks = np.empty(len(pool), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    full_scores = np.zeros(len(pool))
    full_scores[order] = scores
    classes = {c["id"]: c["name"] for c in store.classes(db)}
    summary = {
        "labels_used": fitted.labels_used,
        "accuracy": fitted.cv_accuracy,
        "per_class": {classes[c]: a for c, a in fitted.per_class_accuracy.items()},
        "mode": fitted.mode,
        "seconds": round(time.monotonic() - started, 2),
    }
    if unreadable:
        summary["unreadable"] = unreadable
        summary["message"] = f"done; {unreadable} images could not be read and were left out"
    round_store.publish_round(
        db, round_id, ids, columns[probs.argmax(axis=1)], probs.max(axis=1), full_scores,
        ranks, summary,
    )
    return summary
