"""The task queue: huey, with SQLite storage in the project folder by default, or Redis when
`redis_url` is set (so a GPU machine can run rounds for a web server elsewhere).

Nothing is built at import: `make_huey(project)` builds the queue and registers the tasks,
the same way in the web process (which enqueues) and the worker (which runs them).
"""

from __future__ import annotations

import logging

from huey import RedisHuey, SqliteHuey

from ..config import Project

log = logging.getLogger("activelabel.jobs")


class JobNotQueued(RuntimeError):
    """The task queue refused a job (Redis unreachable, jobs.db unwritable); its row is
    marked failed with the reason."""


def make_huey(project: Project):
    name = f"activelabel-{project.root.name}"
    # results=False: nobody reads a task's return value (the round's row holds its outcome),
    # and huey would keep every one of them in its store.
    if project.config.redis_url:
        huey = RedisHuey(name, url=project.config.redis_url, results=False)
    else:
        huey = SqliteHuey(name, filename=str(project.root / "jobs.db"), results=False)
    root = str(project.root)

    @huey.task(name="run_round")
    def run_round_task(round_id: int) -> None:
        from ..learner import LearnerError
        from ..store import StoreError
        from .round import run_round

        try:
            summary = run_round(Project.open(root), round_id)
        except (LearnerError, StoreError) as exc:
            # Expected (too few classes, a duplicate job...): the round row says why; a
            # line in the log is enough, not huey's traceback.
            log.warning("round %s: %s", round_id, exc)
        else:
            log.info("round %s done: %s", round_id, summary)

    @huey.task(name="run_clustering")
    def run_clustering_task(clustering_id: int) -> None:
        from ..learner import LearnerError
        from ..store import StoreError
        from .clustering import run_clustering

        try:
            summary = run_clustering(Project.open(root), clustering_id)
        except (LearnerError, StoreError, ValueError) as exc:
            log.warning("clustering %s: %s", clustering_id, exc)
        else:
            log.info("clustering %s done: %s clusters", clustering_id, summary["clusters"])

    @huey.task(name="run_quality")
    def run_quality_task(run_id: int) -> None:
        from ..learner import LearnerError
        from ..store import StoreError
        from .quality import run_quality

        try:
            run_quality(Project.open(root), run_id)
        except (LearnerError, StoreError) as exc:
            log.warning("quality run %s: %s", run_id, exc)
        else:
            log.info("quality run %s done", run_id)

    huey.run_round = run_round_task
    huey.run_quality = run_quality_task
    huey.run_clustering = run_clustering_task
    return huey


def enqueue_round(project: Project, huey, strategy: str, requested_by: int | None) -> int:
    """Queue a round (or return the one already queued or running)."""
    from .. import store
    from ..store import rounds as round_store

    db = store.connect(project.db_path)
    try:
        round_id, created = round_store.queue_round(db, strategy, requested_by)
        if created:
            _hand_over(db, "rounds", round_id, huey.run_round)
    finally:
        db.conn.close()
    return round_id


def _hand_over(db, table: str, job_id: int, send) -> None:
    """Hand a job to the queue (`send(job_id)`). If that fails (Redis down, jobs.db
    unwritable) the job row is marked failed: left 'queued' it would block every later one."""
    from ..store import job_rows

    try:
        send(job_id)
    except Exception as exc:
        reason = f"could not queue the job: {exc}"
        job_rows.fail(db, table, job_id, reason)
        raise JobNotQueued(reason) from exc


def enqueue_clustering(project: Project, huey, k: int | None, requested_by: int | None) -> int:
    """Queue a clustering of the images that need votes (or return the one already queued
    or running). k None: the silhouette's suggestion."""
    from .. import store
    from ..store import clusterings

    db = store.connect(project.db_path)
    try:
        clustering_id, created = clusterings.queue_clustering(db, k, requested_by)
        if created:
            _hand_over(db, "clusterings", clustering_id, huey.run_clustering)
    finally:
        db.conn.close()
    return clustering_id


def enqueue_quality(project: Project, huey, requested_by: int | None) -> int:
    """Queue a quality run (or return the one already queued or running)."""
    from .. import store
    from ..store import quality as quality_store

    db = store.connect(project.db_path)
    try:
        run_id, created = quality_store.queue_quality_run(db, requested_by)
        if created:
            _hand_over(db, "quality_runs", run_id, huey.run_quality)
    finally:
        db.conn.close()
    return run_id


def maybe_auto_retrain(project: Project, huey, db) -> int | None:
    """After every `retrain_every` new labels, queue a round by itself (0 turns this off)."""
    from ..store import rounds as round_store

    every = project.config.retrain_every
    if every <= 0 or round_store.active_round(db):
        return None
    if round_store.labels_since_last_round(db) < every:
        return None
    try:
        return enqueue_round(project, huey, project.config.strategy, None)
    except JobNotQueued as exc:
        # The vote that triggered it is saved; the admin page shows the failed round.
        log.warning("automatic round not started: %s", exc)
        return None


def run_worker(project: Project, workers: int = 1) -> None:
    """Run rounds, clusterings and quality runs until stopped (Ctrl-C or SIGTERM)."""
    from huey.consumer import Consumer

    from .. import store
    from ..store import rounds as round_store
    from .round import STALE_SECONDS

    db = store.connect(project.db_path)
    # A round left 'running' by a killed worker will never finish: say so. With the
    # project's own SQLite queue this is the only worker, so any running round is orphaned;
    # with Redis other machines may be working, so only silent rounds count.
    round_store.fail_stale_rounds(db, STALE_SECONDS if project.config.redis_url else 0)
    from ..store import clusterings

    clusterings.fail_stale_clusterings(db, STALE_SECONDS if project.config.redis_url else 0)
    from ..store import quality as quality_store

    quality_store.fail_stale_quality_runs(db, STALE_SECONDS if project.config.redis_url else 0)
    db.conn.close()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # Poll at least once a second (huey's default backs off to 10 s when idle): a round
    # asked for in the browser should start at once, and a poll of SQLite costs nothing.
    Consumer(make_huey(project), workers=workers, worker_type="thread", max_delay=1.0).run()
