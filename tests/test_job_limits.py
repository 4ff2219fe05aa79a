"""A job whose library call never returns (issue 13: a hung cleanlab pool held the one worker
thread for ever, and every job after it waited): the worker runs each job in a process of its
own, stops it at its time limit with the reason, and runs a round beside a long job.

The hang is real, not mocked: one image file becomes a named pipe, as a file on a network
share that stopped answering, and the quality run's near-duplicate check opens it and waits
for ever inside Pillow. The rounds never read it: the first round cached every embedding."""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
import time
from pathlib import Path

import pytest

from server import store
from server.config import CONFIG_NAME, Project
from server.jobs.queue import enqueue, make_queue
from server.jobs.runner import time_limit_error
from server.jobs.workers import start_worker_process, stop_processes
from server.store import job_rows
from server.store.images import all_images

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="needs Linux named pipes and process groups")

FAST = {"input_size": 32, "loader_workers": 0, "batch_size": 32}
# Long enough for the quality run's process to start (it imports torch) and reach the image
# on a busy machine; the test waits this long once.
QUALITY_LIMIT = 60


def configure(project: Project, **settings) -> Project:
    config = dataclasses.replace(project.config, **settings)
    (project.root / CONFIG_NAME).write_text(config.to_toml(), encoding="utf-8")
    return Project.open(project.root)


def wait_for(condition, what: str, worker=None, seconds: float = 240):
    """Poll until `condition()` is truthy (and return it), while the worker keeps running."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if worker is not None:
            assert worker.poll() is None, f"the worker stopped while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.1)
    return value


class Hung:
    """A project whose first round is done (every embedding cached) and one image of which
    is now a named pipe nobody writes to; a quality run that opens it never returns."""

    def __init__(self, project: Project, digits, monkeypatch, **settings):
        self.project = configure(project, **FAST, **settings)
        self.db = store.connect(self.project.db_path)
        self.queue = make_queue(self.project)
        self.admin = store.get_user_by_name(self.db, "admin")["id"]
        ann = store.get_user_by_name(self.db, "ann")["id"]
        classes = {c["name"]: c["id"] for c in store.classes(self.db)}
        images = all_images(self.db)
        for row in images[:9]:
            digit = int(Path(row["rel_path"]).stem.split("-")[1])
            store.add_vote(self.db, ann, row["id"], "label",
                           classes[str(int(digits.target[digit]))])
        self.pipe = Path(images[-1]["path"])
        self.writer: int | None = None
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # lean jobs beside the tests
        self.worker = start_worker_process(self.project.root)

    def run_round(self) -> dict:
        round_id = enqueue(self.project, self.queue, "round", self.admin, strategy="margin")
        return wait_for(lambda: self.settled("rounds", round_id), f"round {round_id} done",
                        self.worker)

    def settled(self, table: str, job_id: int) -> dict | None:
        row = job_rows.get(self.db, table, job_id)
        return row if row["status"] in ("done", "failed") else None

    def hang_the_quality_run(self) -> int:
        """Turn the image into a pipe, queue a quality run, and return once the run's
        process is blocked reading it (a reader is on the pipe: a non-blocking open for
        writing succeeds only then; the pipe stays open, so the read never ends)."""
        self.pipe.unlink()
        os.mkfifo(self.pipe)
        run_id = enqueue(self.project, self.queue, "quality", self.admin)

        def blocked_reader() -> bool:
            row = job_rows.get(self.db, "quality_runs", run_id)
            if row["status"] == "failed":
                pytest.skip(f"the quality run ended before it reached the image: {row['error']}")
            try:
                self.writer = os.open(self.pipe, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                assert exc.errno == errno.ENXIO, exc  # ENXIO: nobody reads it yet
                return False
            return True

        wait_for(blocked_reader, "quality run blocked on the image", self.worker)
        assert job_rows.get(self.db, "quality_runs", run_id)["status"] == "running"
        return run_id

    def reader_is_gone(self) -> bool:
        """Whether the process that was blocked reading the pipe has ended."""
        try:
            os.write(self.writer, b"\0")
        except BrokenPipeError:
            return True
        return False

    def close(self) -> None:
        stop_processes(self.worker)
        if self.writer is not None:
            os.close(self.writer)
        self.db.conn.close()


@pytest.fixture
def hung(project, digits, monkeypatch):
    made = []

    def make(**settings) -> Hung:
        made.append(Hung(project, digits, monkeypatch, **settings))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_a_job_whose_library_call_never_returns_is_stopped_at_its_time_limit(hung):
    project = hung(quality_time_limit_seconds=QUALITY_LIMIT)
    assert project.run_round()["status"] == "done"
    run_id = project.hang_the_quality_run()

    failed = wait_for(lambda: project.settled("quality_runs", run_id),
                      "quality run stopped", project.worker, seconds=QUALITY_LIMIT + 60)
    assert failed["status"] == "failed"
    assert failed["error"] == time_limit_error(QUALITY_LIMIT)
    assert failed["error"] == f"stopped after its time limit of {QUALITY_LIMIT} s"
    # The stuck call's process is gone, not left running beside the worker...
    assert project.reader_is_gone()
    assert project.worker.poll() is None
    # ...and the worker runs the next job to the end.
    after = project.run_round()
    assert after["status"] == "done", after["error"]
    assert job_rows.latest(project.db, "quality_runs")["id"] == run_id  # nothing re-ran it


def test_a_round_queued_behind_a_running_long_job_runs_before_that_job_ends(hung):
    project = hung()  # the default time limit: hours
    assert project.run_round()["status"] == "done"
    run_id = project.hang_the_quality_run()

    row = project.run_round()
    assert row["status"] == "done", row["error"]
    assert job_rows.get(project.db, "quality_runs", run_id)["status"] == "running"

    # A stopped worker takes its jobs' processes with it, the hung one too.
    stop_processes(project.worker)
    wait_for(project.reader_is_gone, "the hung process ended with its worker", seconds=30)
