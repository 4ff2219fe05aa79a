"""The task queue: huey, with SQLite storage in the project folder by default, or Redis when
`redis_url` is set (so a GPU machine can run rounds for a web server elsewhere).

Nothing is built at import: `make_huey(project)` builds the queue and registers the tasks,
the same way in the web process (which enqueues) and the worker (which runs them).
"""

from __future__ import annotations

from huey import RedisHuey, SqliteHuey

from .config import Project


def make_huey(project: Project):
    name = f"activelabel-{project.root.name}"
    if project.config.redis_url:
        huey = RedisHuey(name, url=project.config.redis_url)
    else:
        huey = SqliteHuey(name, filename=str(project.root / "jobs.db"))
    root = str(project.root)

    @huey.task(name="run_round")
    def run_round_task(round_id: int) -> dict:
        from .rounds import run_round

        return run_round(Project.open(root), round_id)

    huey.run_round = run_round_task
    return huey


def enqueue_round(project: Project, huey, strategy: str, requested_by: int | None) -> int:
    """Queue a round (or return the one already queued or running)."""
    from . import store
    from .store import rounds as round_store

    db = store.connect(project.db_path)
    try:
        active = round_store.active_round(db)
        if active:
            return active["id"]
        round_id = round_store.create_round(db, strategy, requested_by)
    finally:
        db.conn.close()
    huey.run_round(round_id)
    return round_id


def maybe_auto_retrain(project: Project, huey, db) -> int | None:
    """After every `retrain_every` new labels, queue a round by itself (0 turns this off)."""
    from .store import rounds as round_store

    every = project.config.retrain_every
    if every <= 0 or round_store.active_round(db):
        return None
    if round_store.labels_since_last_round(db) < every:
        return None
    return enqueue_round(project, huey, project.config.strategy, None)


def run_worker(project: Project, workers: int = 1) -> None:
    """Run rounds until stopped (Ctrl-C or SIGTERM)."""
    from huey.consumer import Consumer

    from . import store
    from .rounds import STALE_SECONDS
    from .store import rounds as round_store

    db = store.connect(project.db_path)
    # A round left 'running' by a killed worker will never finish: say so. With the
    # project's own SQLite queue this is the only worker, so any running round is orphaned;
    # with Redis other machines may be working, so only silent rounds count.
    round_store.fail_stale_rounds(db, STALE_SECONDS if project.config.redis_url else 0)
    db.conn.close()
    Consumer(make_huey(project), workers=workers, worker_type="thread").run()
