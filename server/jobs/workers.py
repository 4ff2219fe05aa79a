"""The worker process: started beside the web server (and stopped with it), and what it
runs, `run_worker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def _die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Linux: this process gets `signum` if the process (the thread) that started it dies,
    even by kill -9: the worker when the server dies, a job's process when its worker dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the process then outlives a killed parent until stopped


# The worker beside the web server runs at a lower CPU priority: a round may take every core
# for minutes, and annotators waiting on a page should not wait for it (bench/load.py
# measures the pages while rounds run).
WORKER_NICENESS = 10


def _worker_setup() -> None:
    _die_with_parent()
    os.nice(WORKER_NICENESS)


def start_worker_process(project: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "server", "worker", str(Path(project).resolve())],
        preexec_fn=_worker_setup,
    )


def stop_processes(*processes: subprocess.Popen | None, timeout: float = 20) -> None:
    """Ask every running process to stop (SIGTERM, all at once), then wait for each; one
    still running after `timeout` seconds is killed. None entries are passed over."""
    started = [p for p in processes if p is not None]
    for process in started:
        if process.poll() is None:
            process.terminate()
    for process in started:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks run (and stop the worker)."""

    def handler(_signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)


def run_worker(project, workers: int = 0) -> None:
    """Run the project's queued jobs (rounds, clusterings, quality runs, auto-label runs)
    until stopped (Ctrl-C or SIGTERM), `workers` at the same time; 0: one per kind of job,
    so a round never waits behind a long quality run or clustering (each kind has at most
    one job queued or running at a time, so no job waits for a thread)."""
    import logging

    from huey.consumer import Consumer

    from ..projects import open_db
    from .queue import make_queue
    from .runner import KINDS, STALE_SECONDS, fail_stale

    db = open_db(project)
    try:
        # A job left 'running' by a killed worker will never finish: say so. With the
        # project's own SQLite queue this is the only worker, so any running job is orphaned;
        # with Redis other machines may be working, so only silent jobs count.
        for kind in KINDS.values():
            fail_stale(db, kind, STALE_SECONDS if project.config.redis_url else 0)
    finally:
        db.conn.close()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # Poll at least once a second (huey's default backs off to 10 s when idle): a job asked
    # for in the browser should start at once, and a poll of SQLite costs nothing.
    # Threads are enough: each job runs in a process of its own (runner.run_supervised).
    Consumer(make_queue(project).huey, workers=workers or len(KINDS), worker_type="thread",
             max_delay=1.0).run()
