"""Faults: the server killed with -9 while annotators answer, a database that cannot be
written, a worker killed in the middle of a round. Real processes, real SQLite files."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import PASSWORDS, card_images, htmx_headers
from flask import g
from sqlite_utils import Database

from server import store
from server.jobs.queue import enqueue, make_queue
from server.jobs.workers import start_worker_process, stop_processes
from server.simulation.live_server import free_port
from server.store import job_rows


class Server:
    """`activelabel serve PROJECT --no-worker` as a child process."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", str(self.root), "--port",
                 str(self.port), "--threads", "4", "--no-worker"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/login", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=20)

    def stop(self) -> None:
        stop_processes(self.process)


class Annotator:
    """A browser's worth of HTTP: a cookie jar, the CSRF token, htmx headers."""

    def __init__(self, base: str, name: str):
        self.base, self.name = base, name
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.token = ""

    def request(self, path: str, data: dict | None = None, headers: dict | None = None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        with self.opener.open(req, timeout=30) as response:
            return response.status, response.read().decode()

    def login(self) -> str:
        _, page = self.request("/login")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        self.request("/login", {"name": self.name, "password": PASSWORDS[self.name],
                                "csrf_token": token})
        _, page = self.request("/label")
        self.token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        return page

    def answer(self, image_id: int, choice: str) -> tuple[int, str]:
        return self.request(f"/label/{image_id}", {"choice": choice},
                            {"X-CSRFToken": self.token, "HX-Request": "true"})


def test_every_acknowledged_answer_survives_a_kill_9_of_the_server(project, tmp_path):
    server = Server(project.root, tmp_path / "server.log")
    server.start()
    db = store.connect(project.db_path)
    class_ids = {c["name"]: c["id"] for c in store.classes(db)}
    acknowledged: list[tuple[str, int, int]] = []  # (user, image id, class id)
    lock = threading.Lock()
    enough = threading.Event()
    errors: list[BaseException] = []

    def annotate(name: str) -> None:
        try:
            client = Annotator(server.url, name)
            images = card_images(client.login())
            while images:
                image_id, choice = images[0], class_ids[str(images[0] % 10)]
                status, card = client.answer(image_id, str(choice))
                if status == 200:
                    with lock:
                        acknowledged.append((name, image_id, choice))
                        if len(acknowledged) >= 12:
                            enough.set()
                images = card_images(card)
        except (OSError, urllib.error.URLError, http.client.HTTPException):
            return  # the server is gone: what was acknowledged so far is what counts
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=annotate, args=(n,)) for n in ("ann", "bob", "admin")]
    try:
        for thread in threads:
            thread.start()
        assert enough.wait(60), "the annotators made no progress"
        assert any(thread.is_alive() for thread in threads)
        server.kill()  # mid-way: the threads are still posting
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert server.process.returncode == -signal.SIGKILL
        with lock:
            acked = list(acknowledged)
        assert len(acked) >= 12

        server.start()  # the same file, after a crash: it opens, recovers the WAL, serves
        assert Annotator(server.url, "ann").login()
        check = sqlite3.connect(project.db_path)
        try:
            assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert check.execute("PRAGMA foreign_key_check").fetchall() == []
            users = dict(check.execute("SELECT name, id FROM users"))
            stored = set(check.execute(
                "SELECT user_id, image_id, class_id FROM annotations WHERE kind = 'label'"
            ))
        finally:
            check.close()
        for name, image_id, class_id in acked:
            assert (users[name], image_id, class_id) in stored, (name, image_id)
    finally:
        server.stop()
        db.conn.close()
    log = (tmp_path / "server.log").read_text()
    for secret in PASSWORDS.values():
        assert secret not in log


# --- a database that cannot be written ----------------------------------------------------


@pytest.fixture
def swap_db(app):
    """swap_db(open) makes every later request of `app` use the real connection `open()`
    returns instead of its usual one; swap_db(None) goes back. (Registered before the app's
    first request, as Flask requires.)"""
    opener: list = [None]

    def before():
        if opener[0] is not None and "db" not in g:
            g.db = Database(opener[0]())

    app.before_request(before)

    def swap(open_connection):
        opener[0] = open_connection

    return swap


def test_an_answer_to_an_unwritable_database_gets_a_clear_503_and_loses_nothing(
    project, swap_db, as_user
):
    client, token = as_user("ann")
    first, second = card_images(client.get("/label").get_data(as_text=True))
    assert client.post(f"/label/{first}", data={"choice": "1"},
                       headers=htmx_headers(token)).status_code == 200
    db = store.connect(project.db_path)
    before = db.execute("SELECT * FROM annotations").fetchall()

    # SQLite's own read-only mode: even root cannot write through this connection.
    swap_db(lambda: sqlite3.connect(f"file:{project.db_path}?mode=ro", uri=True,
                                    isolation_level=None, check_same_thread=False))
    response = client.post(f"/label/{second}", data={"choice": "2"}, headers=htmx_headers(token))
    assert response.status_code == 503
    message = response.get_data(as_text=True)
    assert "The database cannot be written right now (the database file is read-only)" in message
    assert "your last answer was not saved. Try again shortly." in message
    assert response.headers["Retry-After"]
    page = client.post(f"/label/{second}", data={"choice": "2", "csrf_token": token})
    assert page.status_code == 503 and "<html" in page.get_data(as_text=True).lower()
    assert "not saved" in page.get_data(as_text=True)

    swap_db(None)
    assert db.execute("SELECT * FROM annotations").fetchall() == before
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Trying again once the database can be written records the answer.
    assert client.post(f"/label/{second}", data={"choice": "2"},
                       headers=htmx_headers(token)).status_code == 200
    assert len(db.execute("SELECT * FROM annotations").fetchall()) == len(before) + 1
    db.conn.close()


def test_a_database_locked_past_the_busy_timeout_is_a_503_too(project, swap_db, as_user):
    client, token = as_user("ann")
    first, _ = card_images(client.get("/label").get_data(as_text=True))
    blocker = sqlite3.connect(project.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    swap_db(lambda: sqlite3.connect(project.db_path, timeout=0.2, isolation_level=None,
                                    check_same_thread=False))
    try:
        response = client.post(f"/label/{first}", data={"choice": "1"},
                               headers=htmx_headers(token))
        assert response.status_code == 503
        assert "(the database is busy); your last answer was not saved" in response.get_data(True)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    db = store.connect(project.db_path)
    assert db.execute("SELECT count(*) FROM annotations").fetchone()[0] == 0
    db.conn.close()


def test_other_database_errors_are_a_plain_500_without_details(swap_db, as_user):
    client, token = as_user("ann")
    # No tables at all: 'no such table' is a bug, not a full disk, and its text stays inside.
    swap_db(lambda: sqlite3.connect(":memory:", check_same_thread=False))
    response = client.get("/label", headers=htmx_headers(token))
    assert response.status_code == 500
    assert "no such table" not in response.get_data(as_text=True)


# --- a worker killed in the middle of a round ---------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux signals")
def test_a_worker_killed_mid_round_leaves_a_failed_round_and_the_queue_serving(
    project, monkeypatch
):
    db = store.connect(project.db_path)
    users = {r["name"]: r["id"] for r in db.query("SELECT id, name FROM users")}
    classes = {c["name"]: c["id"] for c in store.classes(db)}
    for image_id in range(1, 9):
        store.add_vote(db, users["ann"], image_id, "label", classes[str(image_id % 3)])
    round_id = enqueue(project, make_queue(project), "round", users["admin"], strategy="margin")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    worker = start_worker_process(project.root)
    try:
        deadline = time.monotonic() + 40
        while job_rows.get(db, "rounds", round_id)["status"] == "queued":
            if time.monotonic() > deadline:
                pytest.skip("the worker did not start the round within 40 s on this machine")
            assert worker.poll() is None, "the worker stopped"
            time.sleep(0.05)
        if job_rows.get(db, "rounds", round_id)["status"] != "running":
            pytest.skip("the round finished before it could be killed")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=20)
        assert job_rows.get(db, "rounds", round_id)["status"] == "running"  # orphaned

        worker = start_worker_process(project.root)  # a restart fails the orphan at once
        deadline = time.monotonic() + 40
        while job_rows.get(db, "rounds", round_id)["status"] == "running":
            assert time.monotonic() < deadline, "the restarted worker left the orphan running"
            time.sleep(0.1)
        row = job_rows.get(db, "rounds", round_id)
        assert row["status"] == "failed"
        assert "the worker stopped while running this round" in row["error"]
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM annotations").fetchone()[0] == 8
        # Annotators are still served from the queue.
        assert len(store.next_images(db, users["bob"], n=2)) == 2
    finally:
        stop_processes(worker)
        db.conn.close()


# --- a worker killed in the middle of a clustering or a quality run -----------------------

# kind -> (its table, the admin's button, its form, the status fragment the page polls, noun)
JOB_PAGES = {
    "clustering": ("clusterings", "/bootstrap/run", {"k": "4"}, "/bootstrap/status",
                   "clustering"),
    "quality": ("quality_runs", "/admin/quality/run", {}, "/admin/quality/status",
                "quality run"),
}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux signals")
@pytest.mark.parametrize("kind", sorted(JOB_PAGES))
def test_a_worker_killed_mid_job_is_found_stale_and_the_page_says_why(
    project, as_user, kind, monkeypatch
):
    """The same life as a round's: a killed worker's clustering or quality run stops
    beating, the page that polls it fails it once it has been silent too long and says
    why, and a restarted worker fails an orphan at once."""
    from server.jobs.runner import STALE_SECONDS

    table, button, form, status_url, noun = JOB_PAGES[kind]
    client, token = as_user("admin")
    response = client.post(button, data=form, headers=htmx_headers(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    db = store.connect(project.db_path)
    job_id = job_rows.active(db, table)["id"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    worker = start_worker_process(project.root)
    try:
        deadline = time.monotonic() + 60
        while job_rows.get(db, table, job_id)["status"] == "queued":
            if time.monotonic() > deadline:
                pytest.skip(f"the worker did not start the {noun} within 60 s here")
            assert worker.poll() is None, "the worker stopped"
            time.sleep(0.02)
        if job_rows.get(db, table, job_id)["status"] != "running":
            pytest.skip(f"the {noun} finished before it could be killed")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=20)
        assert job_rows.get(db, table, job_id)["status"] == "running"  # orphaned

        # Its last heartbeat is recent: the page still shows it running...
        page = client.get(status_url, headers=htmx_headers(token)).get_data(as_text=True)
        assert f"{noun.capitalize()} {job_id} is running" in page
        # ...until it has been silent for STALE_SECONDS (its heartbeat aged here, not
        # waited for): then the poll fails it, says why, and stops polling.
        db.execute(f"UPDATE {table} SET heartbeat = ? WHERE id = ?",
                   [time.time() - STALE_SECONDS - 1, job_id])
        page = client.get(status_url, headers=htmx_headers(token)).get_data(as_text=True)
        assert (f"{noun.capitalize()} {job_id} failed: the worker stopped while running this"
                f" {noun} (killed or crashed)") in page
        assert "hx-get" not in page
        assert job_rows.get(db, table, job_id)["status"] == "failed"

        # A second orphan is failed at once by a restarted worker (the only one on the
        # project's own queue), as a round is.
        orphan, _ = job_rows.queue(db, table, None)
        job_rows.start(db, table, orphan, noun)
        worker = start_worker_process(project.root)
        deadline = time.monotonic() + 60
        while job_rows.get(db, table, orphan)["status"] == "running":
            assert time.monotonic() < deadline, "the restarted worker left the orphan running"
            time.sleep(0.1)
        assert "the worker stopped while running this" in job_rows.get(db, table, orphan)["error"]
    finally:
        stop_processes(worker)
        db.conn.close()
