"""The one life of every job (a round, a clustering, a quality run, an auto-label run):
start -> heartbeat -> staged progress -> publish, or fail with the reason; the worker's way
to run one in a process of its own under a time limit; and the check that finds a job whose
worker died.
Each job module gives its kind, its stages and a `work(db, progress)` that does the work and
publishes; everything around it is here, written once, so no kind can lose its heartbeat,
its time limit or its stale check again."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
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
AUTOLABEL = JobKind("autolabel", "auto_label_runs", "auto-label run")
KINDS = {kind.name: kind for kind in (ROUND, CLUSTERING, QUALITY, AUTOLABEL)}

# The module that runs each kind of job: its `run(project, job_id, started=False)`. Imported
# when a job runs, so enqueueing (the web process) never loads the learner.
RUNNERS = {"round": ".round", "clustering": ".clustering", "quality": ".quality",
           "autolabel": ".autolabel"}

log = logging.getLogger("activelabel.jobs")


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
            stages: dict[str, tuple[float, float]], work: Work, started: bool = False) -> dict:
    """Run a queued job to the end: mark it running, keep its heartbeat, let `work` do the
    work and publish, and return its summary. On any failure the job is marked failed with
    the reason (what an earlier job published keeps serving) and the error is re-raised for
    the caller's log. A job that is not queued (a duplicate, or one failed meanwhile) is left
    alone: StoreError. `started`: the job's process was started by `run_supervised`, which
    has marked it running and keeps its heartbeat."""
    from ..projects import open_db

    db = open_db(project)
    try:
        if started:
            return _work(db, kind, job_id, stages, work)
        job_rows.start(db, kind.table, job_id, kind.noun)
        with Heartbeat(project.db_path, kind, job_id):
            return _work(db, kind, job_id, stages, work)
    finally:
        db.conn.close()


def _work(db: Database, kind: JobKind, job_id: int, stages: dict[str, tuple[float, float]],
          work: Work) -> dict:
    try:
        return work(db, Progress(db, kind, job_id, stages))
    except Exception as exc:
        expected = isinstance(exc, EXPECTED_ERRORS)
        job_rows.fail(db, kind.table, job_id,
                      str(exc) if expected else f"{type(exc).__name__}: {exc}")
        if not expected:
            traceback.print_exc()
        raise


def run_here(project: Project, kind: str, job_id: int, started: bool = False) -> dict:
    """Run one queued job of `kind` in this process."""
    module = importlib.import_module(RUNNERS[kind], __package__)
    return module.run(project, job_id, started=started)


# -- the worker's way: a process per job, under a time limit ----------------------------------

def time_limit_error(seconds: int) -> str:
    return f"stopped after its time limit of {seconds} s"


def run_supervised(project: Project, kind: JobKind, job_id: int) -> dict | None:
    """Run a queued job the way the worker does: in a process of its own, started fresh
    (never forked from the worker's threads: a fork inherits locks other threads hold), so
    a library call that never returns holds that process and nothing else. This thread marks
    the job running, keeps its heartbeat and waits; past the kind's time limit
    (`ProjectConfig.time_limit`) it kills the process with everything it started and fails
    the job with the reason, as it does when the process dies without settling the job.
    Returns the job's row once settled. A job that is not queued is left alone: StoreError."""
    from ..projects import open_db

    limit = project.config.time_limit(kind.name)
    db = open_db(project)
    try:
        job_rows.start(db, kind.table, job_id, kind.noun)
        try:
            with Heartbeat(project.db_path, kind, job_id):
                reason = _run_process(project, kind, job_id, limit)
        except Exception as exc:  # the process could not be started or waited for
            job_rows.fail(db, kind.table, job_id, f"{type(exc).__name__}: {exc}")
            raise
        if reason is None and job_rows.is_running(db, kind.table, job_id):
            reason = "its process ended without finishing it (the worker's log says why)"
        if reason:
            # A no-op when the job settled itself first (done, or failed with its reason).
            job_rows.fail(db, kind.table, job_id, reason)
        return job_rows.get(db, kind.table, job_id)
    finally:
        db.conn.close()


# The job process's command: an import, not `-m`, so that this module is loaded once there.
_PROCESS_CODE = "from server.jobs.runner import job_process_main; job_process_main()"


def _run_process(project: Project, kind: JobKind, job_id: int, limit: int) -> str | None:
    """Run the job in its process; the reason to fail it, or None if it ended cleanly."""
    started = time.monotonic()
    # Its own session, so an overrun kills its whole process group: a DataLoader worker or
    # a pool it started goes too, however it hangs.
    process = subprocess.Popen(
        [sys.executable, "-c", _PROCESS_CODE, str(project.root), kind.name, str(job_id),
         str(os.getpid())],
        start_new_session=True,
    )
    try:
        code = process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        log.warning("%s %s: past its time limit of %s s; stopping it", kind.name, job_id, limit)
        return time_limit_error(limit)
    finally:
        if process.poll() is None:
            _kill_group(process)
    log.info("%s %s: its process ended after %.1f s", kind.name, job_id,
             time.monotonic() - started)
    if code == 0:
        return None
    if code < 0:
        return f"its process was killed by {signal.Signals(-code).name} (out of memory?)"
    return f"its process stopped with exit code {code} (the worker's log says why)"


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def job_process_main() -> None:
    """A job's process (argv: project folder, kind, job id, the worker's pid): run the job
    its worker has started, then exit. A failure is on the job's row; the worker logs it."""
    from ..config import DB_NAME
    from .workers import _die_with_parent

    root, kind, job_id, worker = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    _die_with_parent(signal.SIGKILL)  # a job nobody waits for must not run on
    if os.getppid() != worker:
        raise SystemExit(f"{kind} {job_id}: the worker stopped before the job's process began")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        run_here(Project.open(root), kind, job_id, started=True)
    except Exception as exc:
        # Work that fails has failed its row already; a job that never began its work (its
        # settings no longer read, the database would not open) says why here.
        db = store.connect(os.path.join(root, DB_NAME), migrate=False)
        try:
            if job_rows.is_running(db, KINDS[kind].table, job_id):
                expected = isinstance(exc, EXPECTED_ERRORS)
                if not expected:
                    traceback.print_exc()
                job_rows.fail(db, KINDS[kind].table, job_id,
                              str(exc) if expected else f"{type(exc).__name__}: {exc}")
        finally:
            db.conn.close()
        # An expected failure (the row says why) is a clean end; the worker logs it.
        raise SystemExit(0 if isinstance(exc, EXPECTED_ERRORS) else 1) from None


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
