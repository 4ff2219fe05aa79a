"""What the browser tests share: Debian's Chromium and how it is started, the installed
`activelabel` command, a project served on a free port (always stopped), screenshots."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from server.jobs.workers import stop_processes
from server.simulation.live_server import free_port

CHROMIUM = os.environ.get("ACTIVELABEL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[1] / "test-output"
TIMEOUT_MS = 10_000

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason=f"no browser at {CHROMIUM}")


def cli() -> list[str]:
    """The installed `activelabel` command, preferably the one beside this Python."""
    found = shutil.which("activelabel", path=str(Path(sys.executable).parent)) or shutil.which(
        "activelabel"
    )
    assert found, "the activelabel command is not installed (pip install -e .)"
    return [found]


def run(*args: str) -> str:
    """Run an activelabel command; its output, or a failure that shows it."""
    done = subprocess.run([*cli(), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"activelabel {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def serving(project: Path, log_path: Path, *options: str) -> Iterator[str]:
    """`activelabel serve PROJECT` on a free port until the block ends; yields the base URL.
    A server that does not answer within 30 s fails the test with its log."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*cli(), "serve", str(project), "--port", str(port), *options],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not _answers(f"{base}/login"):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the server did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield base
        finally:
            stop_processes(process, timeout=10)


@contextlib.contextmanager
def chromium() -> Iterator:
    """Debian's Chromium through Playwright, closed afterwards."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def screenshot(page, name: str) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def two_vote_digits_project(root: Path, users: dict[str, tuple[str, str]],
                            images: int) -> Path:
    """`images` real digits in a project needing two votes per image and no QA sample (so
    every image needs exactly two and a disagreement reaches review), with `users`
    {name: (role, password)}, made through the CLI."""
    from server.dataset.demo import write_digits

    write_digits(root / "images", root / "oracle.csv", limit=images)
    project = root / "digits"
    run("init", str(project), "--images", str(root / "images"),
        "--classes", ",".join(str(d) for d in range(10)), "--votes-per-image", "2")
    settings_path = project / "activelabel.toml"
    settings = tomllib.loads(settings_path.read_text())
    settings["labeling"]["qa_fraction"] = 0.0
    settings_path.write_text(tomli_w.dumps(settings))
    for name, (role, password) in users.items():
        run("user", "add", str(project), name, "--role", role, "--password", password)
    return project
