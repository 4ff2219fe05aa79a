"""The task queue: huey, with SQLite storage in the project folder by default, or Redis when
`redis_url` is set. One task runs every kind of job by name; `enqueue` writes the job's row
and hands it to the queue.

Nothing is built at import: `make_queue(project)` builds the queue and registers the task,
the same way in the web process (which enqueues) and the worker (which runs them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from huey import Huey, RedisHuey, SqliteHuey

from ..config import Project
from .runner import EXPECTED_ERRORS, KINDS, ROUND, run_supervised

log = logging.getLogger("activelabel.jobs")


class JobNotQueued(RuntimeError):
    """The task queue refused a job (Redis unreachable, jobs.db unwritable); its row is
    marked failed with the reason."""


@dataclass(frozen=True)
class TaskQueue:
    """The project's huey and its one task, `run_job(kind, job_id)`."""

    huey: Huey
    run_job: object  # huey's TaskWrapper: calling it queues the task

    def send(self, kind: str, job_id: int) -> None:
        self.run_job(kind, job_id)


def make_queue(project: Project) -> TaskQueue:
    name = f"activelabel-{project.root.name}"
    # results=False: nobody reads a task's return value (the job's row holds its outcome),
    # and huey would keep every one of them in its store.
    if project.config.redis_url:
        huey = RedisHuey(name, url=project.config.redis_url, results=False)
    else:
        huey = SqliteHuey(name, filename=str(project.root / "jobs.db"), results=False)
    root = str(project.root)

    @huey.task(name="run_job")
    def run_job(kind: str, job_id: int) -> None:
        # The job runs in a process of its own under its time limit (runner.run_supervised);
        # this thread waits for it.
        try:
            row = run_supervised(Project.open(root), KINDS[kind], job_id)
        except EXPECTED_ERRORS as exc:
            # Expected (a duplicate job...): the job's row says why; a line in the log is
            # enough, not huey's traceback.
            log.warning("%s %s: %s", kind, job_id, exc)
            return
        if row["status"] == "done":
            log.info("%s %s done: %s", kind, job_id, row["message"] or "done")
        else:
            log.warning("%s %s %s: %s", kind, job_id, row["status"], row["error"])

    return TaskQueue(huey, run_job)


def enqueue(project: Project, tasks: TaskQueue, kind: str, requested_by: int | None,
            **fields) -> int:
    """Queue a job of `kind` (or return the one of that kind already queued or running).
    `fields` are its own columns: a round's strategy, a clustering's k. If the queue refuses
    it (Redis down, jobs.db unwritable) the row is marked failed, since left 'queued' it
    would block every later one, and JobNotQueued says why."""
    from .. import store
    from ..store import job_rows

    table = KINDS[kind].table
    db = store.connect(project.db_path)
    try:
        job_id, created = job_rows.queue(db, table, requested_by, **fields)
        if created:
            try:
                tasks.send(kind, job_id)
            except Exception as exc:
                reason = f"could not queue the job: {exc}"
                job_rows.fail(db, table, job_id, reason)
                raise JobNotQueued(reason) from exc
    finally:
        db.conn.close()
    return job_id


def maybe_auto_retrain(project: Project, tasks: TaskQueue, db) -> int | None:
    """After every `retrain_every` new labels, queue a round by itself (0 turns this off)."""
    from ..store import job_rows
    from ..store import rounds as round_store

    every = project.config.retrain_every
    if every <= 0 or job_rows.active(db, ROUND.table):
        return None
    if round_store.labels_since_last_round(db) < every:
        return None
    try:
        return enqueue(project, tasks, ROUND.name, None, strategy=project.config.strategy)
    except JobNotQueued as exc:
        # The vote that triggered it is saved; the admin page shows the failed round.
        log.warning("automatic round not started: %s", exc)
        return None
