"""Starting the round worker beside the web server, and stopping both together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if the server dies, even by kill -9."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the worker then outlives a killed server until stopped


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
