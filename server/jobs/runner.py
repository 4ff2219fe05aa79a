"""The one life of every job (a round, a clustering, a quality run): start -> heartbeat ->
staged progress -> publish, or fail with the reason; and the check that finds a job whose
worker died. Each job module gives its kind, its stages and a `work(db, progress)` that
does the work and publishes; everything around it is here, written once, so no kind can
lose its heartbeat or its stale check again."""

from __future__ import annotations

import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

from .. import store
from ..config import Project
from ..learner import LearnerError
from ..store import job_rows

# A running job's heartbeat comes every STALE_SECONDS / 8; silence for longer than
# STALE_SECONDS means its worker died.
STALE_SECONDS = 120

# Failures whose message is meant for the person who asked (too few classes, nothing to
# cluster, an unknown strategy): the row says the message alone, the log one line. Anything
# else is a bug: the row names the exception type and the log gets its traceback.
EXPECTED_ERRORS = (LearnerError, store.StoreError, ValueError)


@dataclass(frozen=True)
class JobKind:
    name: str  # what the queue and the log call it: "round"
    table: str  # its rows
    noun: str  # in messages: "round", "quality run"

    @property
    def stale_error(self) -> str:
        return f"the worker stopped while running this {self.noun} (killed or crashed)"


ROUND = JobKind("round", "rounds", "round")
CLUSTERING = JobKind("clustering", "clusterings", "clustering")
QUALITY = JobKind("quality", "quality_runs", "quality run")
KINDS = {kind.name: kind for kind in (ROUND, CLUSTERING, QUALITY)}


class Progress:
    """Maps each stage's own 0..1 progress into the job's overall progress, at most a few
    writes a second. `stages` maps a stage's name to its (start, end) share of the job."""

    def __init__(self, db: Database, kind: JobKind, job_id: int,
                 stages: dict[str, tuple[float, float]]):
        self.db, self.kind, self.job_id, self.stages, self.last = db, kind, job_id, stages, 0.0

    def stage(self, name: str) -> Callable[..., None]:
        low, high = self.stages[name]

        def report(fraction: float, message: str = "") -> None:
            now = time.monotonic()
            if now - self.last < 0.25 and fraction < 1.0:
                return  # keep the database writes few
            self.last = now
            job_rows.report(self.db, self.kind.table, self.job_id,
                            low + (high - low) * fraction, message or name)

        return report


class Heartbeat:
    """Marks the job alive every few seconds from a thread, with its own connection,
    whatever stage it is in: a long silent step (a big cross-validation, a slow batch on
    a busy CPU) must not look like a dead worker to the web page (see STALE_SECONDS)."""

    def __init__(self, db_path, kind: JobKind, job_id: int, every: float = STALE_SECONDS / 8):
        self.db_path, self.kind, self.job_id, self.every = db_path, kind, job_id, every
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"{kind.name}-heartbeat",
                                       daemon=True)

    def _run(self) -> None:
        db = store.connect(self.db_path, migrate=False)
        try:
            while not self.stopped.wait(self.every):
                try:
                    job_rows.heartbeat(db, self.kind.table, self.job_id)
                except sqlite3.OperationalError:
                    pass  # the database stayed locked past the busy timeout: beat next time
        finally:
            db.conn.close()

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stopped.set()
        self.thread.join()


Work = Callable[[Database, Progress], dict]


def run_job(project: Project, kind: JobKind, job_id: int,
            stages: dict[str, tuple[float, float]], work: Work) -> dict:
    """Run a queued job to the end: mark it running, keep its heartbeat, let `work` do the
    work and publish, and return its summary. On any failure the job is marked failed with
    the reason (what an earlier job published keeps serving) and the error is re-raised for
    the caller's log. A job that is not queued (a duplicate, or one failed meanwhile) is left
    alone: StoreError."""
    from ..projects import open_db

    db = open_db(project)
    try:
        job_rows.start(db, kind.table, job_id, kind.noun)
        with Heartbeat(project.db_path, kind, job_id):
            try:
                return work(db, Progress(db, kind, job_id, stages))
            except Exception as exc:
                expected = isinstance(exc, EXPECTED_ERRORS)
                job_rows.fail(db, kind.table, job_id,
                              str(exc) if expected else f"{type(exc).__name__}: {exc}")
                if not expected:
                    traceback.print_exc()
                raise
    finally:
        db.conn.close()


def fail_stale(db: Database, kind: JobKind, stale_seconds: float = STALE_SECONDS) -> list[int]:
    """Fail the jobs of this kind whose worker has been silent for `stale_seconds`."""
    return job_rows.fail_stale(db, kind.table, stale_seconds, kind.stale_error)


def status(db: Database, kind: JobKind) -> dict:
    """What a page shows of a kind of job: the one queued or running (`active`, after failing
    it if its worker died, so the page says why instead of polling for ever) and the newest
    (`latest`)."""
    active = job_rows.active(db, kind.table)
    if active and active["status"] == "running" and fail_stale(db, kind):
        active = job_rows.active(db, kind.table)
    return {"active": active, "latest": job_rows.latest(db, kind.table)}
