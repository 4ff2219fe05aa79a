"""Simulated annotators that drive the real product over HTTP.

`simulate` builds a fresh copy of a project (same images and classes, no labels, the
embedding cache copied so nothing is embedded twice), starts `activelabel serve` and
`activelabel worker` on it, then loops: an annotator labels a batch in the browser's way
(GET /label, POST /label/<id>) answering from the oracle file; the admin presses 'Retrain
now' and waits for the round; the round's predictions on held-out test images give the
accuracy. The learning curve is written as CSV and PNG.
"""

from __future__ import annotations

import csv
import hashlib
import http.cookiejar
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import store
from .config import Project
from .projects import add_user, init_project

TEST_SHARE = 0.3


class SimulationError(Exception):
    pass


def read_labels_csv(path: Path) -> dict[str, str]:
    """file (relative path or name) -> label, from a CSV with columns file,label."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
            raise SimulationError(f"{path} needs the columns file,label")
        return {row["file"]: row["label"] for row in reader}


def held_out(files: list[str], seed: int) -> set[str]:
    """A seeded TEST_SHARE of the files, by hash, when no test file is given."""
    def key(name: str) -> float:
        return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16) / 16**8
    return {f for f in files if key(f) < TEST_SHARE}


class Browser:
    """A cookie-keeping HTTP client that sends the CSRF token the way the pages do."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.token = ""

    def request(self, path: str, data: dict | None = None, htmx: bool = False) -> str:
        headers = {"X-CSRFToken": self.token} if data is not None else {}
        if htmx:
            headers["HX-Request"] = "true"
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers)
        try:
            with self.opener.open(req, timeout=600) as response:
                text = response.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            raise SimulationError(
                f"{path}: HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')[:300]}"
            ) from exc
        match = re.search(r'name="csrf-token" content="([^"]+)"', text)
        if match:
            self.token = match.group(1)
        return text

    def login(self, name: str, password: str) -> None:
        self.request("/login")
        self.request("/login", {"name": name, "password": password, "csrf_token": self.token})
        if "Log out" not in self.request("/label"):
            raise SimulationError(f"could not log in as {name}")


@dataclass
class Curve:
    strategy: str
    points: list[tuple[int, float]] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SimulationError("the server stopped while starting")
        try:
            with urllib.request.urlopen(url + "/login", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise SimulationError(f"the server at {url} did not answer within {seconds} s")


def copy_project(source: Project, target: Path) -> Project:
    """A fresh project over the same images and classes, no labels, embeddings reused."""
    db = store.connect(source.db_path)
    classes = [c["name"] for c in store.classes(db)]
    db.conn.close()
    project, _ = init_project(target, source.config.images, classes, seed=source.config.seed)
    embeddings = source.cache_dir / "embeddings"
    if embeddings.is_dir():
        shutil.copytree(embeddings, project.cache_dir / "embeddings", dirs_exist_ok=True)
    # Same model settings as the source.
    config_text = (source.root / "activelabel.toml").read_text(encoding="utf-8")
    (project.root / "activelabel.toml").write_text(
        config_text.replace(f'name = "{source.config.name}"', f'name = "{project.config.name}"'),
        encoding="utf-8",
    )
    return Project.open(project.root)


def run_simulation(
    source: Project, oracle: dict[str, str], test_files: set[str] | None, strategy: str,
    budget: int, batch: int, workdir: Path, log=print,
) -> Curve:
    project = copy_project(source, workdir / f"sim-{strategy}")
    passwords = {name: add_user(project, name, role) for name, role in
                 (("sim-admin", "admin"), ("sim-annotator", "annotator"))}
    db = store.connect(project.db_path)
    files = {row["id"]: row["rel_path"] for row in db.query("SELECT id, rel_path FROM images")}
    class_ids = {c["name"]: c["id"] for c in store.classes(db)}
    db.conn.close()
    by_name = {Path(f).name: label for f, label in oracle.items()}
    truth = {i: oracle.get(rel, by_name.get(Path(rel).name)) for i, rel in files.items()}
    if test_files is None:
        test_files = held_out(sorted(files.values()), project.config.seed)
    test_ids = {i for i, rel in files.items() if rel in test_files or Path(rel).name in test_files}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "server"]
    server = subprocess.Popen(command + ["serve", str(project.root), "--port", str(port),
                                         "--no-worker"], stdout=subprocess.DEVNULL)
    worker = subprocess.Popen(command + ["worker", str(project.root)], stdout=subprocess.DEVNULL)
    curve = Curve(strategy)
    try:
        _wait_until_up(url, server)
        annotator, admin = Browser(url), Browser(url)
        annotator.login("sim-annotator", passwords["sim-annotator"])
        admin.login("sim-admin", passwords["sim-admin"])
        labeled = 0
        while labeled < budget:
            labeled += _label_batch(annotator, min(batch, budget - labeled), truth, test_ids,
                                    class_ids)
            accuracy = _retrain(admin, strategy, truth, test_ids)
            if accuracy is not None:
                curve.points.append((labeled, accuracy))
                log(f"{strategy}: {labeled} labels, test accuracy {accuracy:.3f}")
    finally:
        for process in (server, worker):
            process.terminate()
            process.wait(timeout=30)
    return curve


def _label_batch(browser: Browser, count: int, truth: dict, test_ids: set, class_ids: dict) -> int:
    """Answer `count` images from the oracle; held-out test images are skipped."""
    done = 0
    page = browser.request("/label", htmx=True)
    while done < count:
        match = re.search(r'data-image-id="(\d+)"', page)
        if not match:
            break  # nothing left to label
        image_id = int(match.group(1))
        label = truth.get(image_id)
        if image_id in test_ids or label is None:
            choice = "skip"
        else:
            choice = str(class_ids[label])
            done += 1
        page = browser.request(f"/label/{image_id}", {"choice": choice}, htmx=True)
    return done


def _retrain(browser: Browser, strategy: str, truth: dict, test_ids: set) -> float | None:
    """Press 'Retrain now', wait for the round, score its predictions on the test images."""
    browser.request("/admin/rounds/", {"strategy": strategy}, htmx=True)
    while True:
        status = browser.request("/admin/rounds/status", htmx=True)
        if "hx-get" not in status:  # the fragment stops polling when no round is active
            break
        time.sleep(0.3)
    latest = json.loads(browser.request("/admin/rounds/latest.json"))
    if latest.get("status") != "done":
        return None  # e.g. fewer than two classes labeled yet
    rows = csv.DictReader(browser.request(f"/admin/rounds/{latest['id']}/predictions.csv")
                          .splitlines())
    scored = [(int(r["image_id"]), r["predicted"]) for r in rows if int(r["image_id"]) in test_ids]
    if not scored:
        return None
    return sum(truth[i] == predicted for i, predicted in scored) / len(scored)


def write_curves(curves: list[Curve], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "learning_curve.csv", out / "learning_curve.png"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["strategy", "labels", "test_accuracy"])
        for curve in curves:
            writer.writerows((curve.strategy, n, f"{a:.4f}") for n, a in curve.points)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for curve in curves:
        if curve.points:
            xs, ys = zip(*curve.points)
            axes.plot(xs, ys, marker="o", label=curve.strategy)
    axes.set_xlabel("labels")
    axes.set_ylabel("accuracy on held-out images")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)
    return csv_path, png_path
