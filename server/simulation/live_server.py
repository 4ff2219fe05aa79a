"""Running the product for a simulation: `serve` and `worker` as subprocesses with their
logs, stopped whatever happens, and a cookie-keeping HTTP client that posts like the pages."""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ..config import Project
from ..jobs.workers import _die_with_parent, stop_processes

START_SECONDS = 120  # the server imports torch & co. before it answers
STOP_SECONDS = 20
LOG_TAIL = 2000


class SimulationError(Exception):
    pass


class Browser:
    """A cookie-keeping HTTP client that sends the CSRF token the way the pages do."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.token = ""

    def request(self, path: str, data: dict | None = None, htmx: bool = False,
                timeout: float = 600) -> str:
        headers = {"X-CSRFToken": self.token} if data is not None else {}
        if htmx:
            headers["HX-Request"] = "true"
        # doseq: a list value is sent as the field repeated (a grid's image ids).
        body = urllib.parse.urlencode(data, doseq=True).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers)
        try:
            with self.opener.open(req, timeout=timeout) as response:
                text = response.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            detail = re.sub(r"<[^>]+>", " ", exc.read().decode("utf-8", "replace"))
            detail = " ".join(detail.split())[:300]
            raise SimulationError(f"{path}: HTTP {exc.code}: {detail}") from exc
        match = re.search(r'name="csrf-token" content="([^"]+)"', text)
        if match:
            self.token = match.group(1)
        return text

    def login(self, name: str, password: str) -> None:
        """Log in through the form; the answer is the page the login redirects to (the
        admin page, or the labeling page). No other page is opened: an admin opening
        /label would hold images away from the annotator."""
        self.request("/login")
        page = self.request(
            "/login", {"name": name, "password": password, "csrf_token": self.token}
        )
        if "Log out" not in page:
            raise SimulationError(f"could not log in as {name}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, size: int = LOG_TAIL) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - size))
            text = handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no log)"
    return text or "(empty log)"


class _Processes:
    """The server and worker subprocesses, their logs, and stopping them whatever happens."""

    def __init__(self, project: Project, port: int):
        self.project, self.port = project, port
        self.logs = {"server": project.root / "server.log", "worker": project.root / "worker.log"}
        self.running: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        command = [sys.executable, "-m", "server"]
        args = {
            "server": ["serve", str(self.project.root), "--host", "127.0.0.1",
                       "--port", str(self.port), "--threads", "4", "--no-worker"],
            "worker": ["worker", str(self.project.root)],
        }
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("server", "worker"):
            with self.logs[name].open("wb") as log:
                self.running[name] = subprocess.Popen(
                    command + args[name], stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent,
                )

    def dead(self) -> str | None:
        """A message naming a process that stopped, with its log's tail; else None."""
        for name, process in self.running.items():
            if process.poll() is not None:
                return self.stopped(name)
        return None

    def stopped(self, name: str) -> str:
        code = self.running[name].poll()
        how = f"exited with status {code}" if code is not None else "is running"
        return (f"the {name} process {how}; the end of its log {self.logs[name]}:\n"
                f"{_tail(self.logs[name])}")

    def stop(self) -> None:
        stop_processes(*self.running.values(), timeout=STOP_SECONDS)


@contextlib.contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """SIGTERM raises SystemExit while inside, so `finally` blocks stop the subprocesses
    (they also get SIGTERM if this process dies without cleaning up, see
    workers._die_with_parent)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum, _frame):
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_until_up(url: str, processes: _Processes, seconds: float = START_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        problem = processes.dead()
        if problem:
            raise SimulationError(f"could not start: {problem}")
        try:
            with urllib.request.urlopen(url + "/login", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise SimulationError(
        f"the server at {url} did not answer within {seconds:.0f} s; "
        + processes.stopped("server")
    )
