"""Load test: N simulated annotators on loopback against a real `activelabel serve`.

    python bench/load.py [--images 100000] [--annotators 20] [--seconds 30]

Builds a project whose image rows are synthetic (every row points at one small real PNG:
images are checked only on import, and the card does not read them), starts the server as
a subprocess, and has each annotator thread log in, then loop: answer the current image
(POST /label/<id>, htmx) which returns the next card. Prints p50/p95/p99 latency of 'next
image' (GET /label) and 'submit label', requests/s, errors, 'database is locked' answers,
and images handed to two annotators at once. No timing is asserted anywhere.

Then a second window of the same length with rounds running beside the annotators: the
cache gets synthetic 1,280-d embeddings for every image (nothing is decoded, as in
bench/round_latency.py) and `activelabel retrain` runs one round after another in its own
process at the priority of the worker that `serve` starts (niced), fitting on the labels
given so far and switching the queue.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from server import store  # noqa: E402
from server.config import Project, ProjectConfig  # noqa: E402
from server.jobs.workers import WORKER_NICENESS  # noqa: E402
from server.passwords import hash_password  # noqa: E402

PASSWORD = "load-test-password"
CLASSES = 10


def build(root: Path, size: int) -> Project:
    project = Project.create(root, ProjectConfig(name=f"load{size}", retrain_every=0))
    png = root / "one.png"
    Image.new("L", (28, 28), 128).save(png)
    db = store.connect(project.db_path)
    store.add_classes(db, [f"c{i}" for i in range(CLASSES)])
    import_id = store.start_import(db, "synthetic")
    for start in range(0, size, 50_000):
        rows = [{"sha256": f"{i:064x}", "path": str(png), "rel_path": f"{i}.png", "width": 28,
                 "height": 28, "format": "PNG", "mode": "L", "bytes": png.stat().st_size}
                for i in range(start, min(size, start + 50_000))]
        store.add_images(db, import_id, rows, seed=0, votes_needed=1)
    db.conn.close()
    return project


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_ms: list[float] = []
        self.submit_ms: list[float] = []
        self.errors: dict[str, int] = {}
        self.locked = 0
        self.holders: dict[int, set[str]] = {}  # image id -> annotators showing it now
        self.needed: dict[int, int] = {}  # image id -> votes it needs (QA images: more)
        self.double = 0  # times an image was on more screens at once than it needs votes
        self.answered_by: dict[int, set[str]] = {}

    def error(self, what: str) -> None:
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1


def annotator(base: str, name: str, stop: float, stats: Stats, think: float = 0.0) -> None:
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def call(path, data=None, headers=None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(base + path, data=body, headers=headers or {})
        with opener.open(request, timeout=60) as response:
            return response.read().decode()

    try:
        page = call("/login")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        call("/login", {"name": name, "password": PASSWORD, "csrf_token": token})
        token = re.search(r'name="csrf-token" content="([^"]+)"', call("/label")).group(1)
    except (OSError, AttributeError) as exc:
        stats.error(f"login: {exc}")
        return
    headers = {"X-CSRFToken": token, "HX-Request": "true"}
    current = None
    while time.monotonic() < stop:
        try:
            started = time.perf_counter()
            card = call("/label", headers=headers)
            with stats.lock:
                stats.next_ms.append((time.perf_counter() - started) * 1000)
            ids = [int(i) for i in re.findall(r'src="/images/(\d+)', card)]
            if not ids:
                stats.error("empty card")
                return
            current = ids[0]
            with stats.lock:
                showing = stats.holders.setdefault(current, set())
                showing.add(name)
                if len(showing) > stats.needed.get(current, 1):
                    stats.double += 1
            started = time.perf_counter()
            call(f"/label/{current}", {"choice": str(1 + current % CLASSES)}, headers)
            with stats.lock:
                stats.submit_ms.append((time.perf_counter() - started) * 1000)
                stats.holders.get(current, set()).discard(name)
                stats.answered_by.setdefault(current, set()).add(name)
            if think:  # a person looks at the image before the next key press
                time.sleep(random.uniform(0.5 * think, 1.5 * think))
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            exc.close()
            if "busy" in text or "locked" in text:
                with stats.lock:
                    stats.locked += 1
            stats.error(f"HTTP {exc.code}")
        except OSError as exc:
            stats.error(type(exc).__name__)


def measure(base: str, names: list[str], seconds: float,
            needed: dict[int, int], think: float = 0.0) -> tuple[Stats, float]:
    """Every annotator labels for `seconds`; returns their latencies and the wall time."""
    stats = Stats()
    stats.needed = needed
    stop = time.monotonic() + seconds
    threads = [threading.Thread(target=annotator, args=(base, n, stop, stats, think))
               for n in names]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return stats, time.perf_counter() - began


def fill_embeddings(project: Project, size: int, dim: int = 1280, seed: int = 0) -> None:
    """Synthetic embeddings for every image, straight into the learner's cache."""
    import numpy as np

    from server.learner.setup import make_learner

    cache = make_learner(project).cache()
    rng = np.random.default_rng(seed)
    for start in range(1, size + 1, 50_000):
        stop = min(size + 1, start + 50_000)
        cache.put(np.arange(start, stop),
                  np.abs(rng.normal(size=(stop - start, dim))).astype(np.float16))
    cache.flush()


class RoundLoop:
    """`activelabel retrain` again and again in a subprocess, until stopped."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log
        self.stopping = threading.Event()
        self.finished = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.log.open("ab") as out:
            while not self.stopping.is_set():
                # At the worker's priority: `activelabel serve` starts its worker niced.
                code = subprocess.call(
                    [sys.executable, "-m", "server", "retrain", str(self.root)],
                    stdout=out, stderr=subprocess.STDOUT,
                    preexec_fn=lambda: os.nice(WORKER_NICENESS))
                self.finished += code == 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> int:
        self.stopping.set()
        self.thread.join()
        return self.finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=8, help="waitress request threads")
    parser.add_argument("--think", type=float, default=0.0,
                        help="Mean seconds an annotator looks at an image before answering "
                             "(0: answer at once, the server's saturation).")
    parser.add_argument("--no-rounds", dest="rounds", action="store_false",
                        help="Skip the second window, with rounds running.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="activelabel-load-") as tmp:
        root = Path(tmp) / "project"
        started = time.perf_counter()
        project = build(root, args.images)
        names = [f"ann{i:02d}" for i in range(args.annotators)]
        db = store.connect(project.db_path)
        hashed = hash_password(PASSWORD)
        for name in names:
            store.add_user(db, name, "annotator", hashed)
        db.conn.close()
        print(f"built {args.images} images in {time.perf_counter() - started:.1f} s")

        port = free_port()
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", str(root), "--port", str(port),
                 "--threads", str(args.threads), "--no-worker"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    with urllib.request.urlopen(base + "/login", timeout=2):
                        break
                except OSError:
                    time.sleep(0.2)
            check = store.connect(project.db_path, migrate=False)
            needed = dict(check.execute("SELECT id, votes_needed FROM images").fetchall())
            qa = sum(1 for v in needed.values() if v > 1)
            check.conn.close()
            stats, elapsed = measure(base, names, args.seconds, needed, args.think)
            windows = [("annotators only", stats, elapsed, 0)]
            if args.rounds:
                fill_embeddings(project, args.images)
                rounds = RoundLoop(root, Path(tmp) / "rounds.log")
                rounds.start()
                try:
                    during, elapsed2 = measure(base, names, args.seconds, needed, args.think)
                finally:
                    done = rounds.stop()
                windows.append((f"with rounds running ({done} finished)", during, elapsed2,
                                done))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        server_log = log.read_text(errors="replace")

        check = store.connect(project.db_path, migrate=False)
        twice = check.execute(
            "SELECT count(*) FROM (SELECT a.image_id FROM annotations a JOIN images i"
            " ON i.id = a.image_id WHERE a.kind = 'label' GROUP BY a.image_id"
            " HAVING count(*) > max(i.votes_needed, 1))").fetchone()[0]
        integrity = check.execute("PRAGMA integrity_check").fetchone()[0]
        check.conn.close()

    print(f"think time {args.think:g} s (0 = back-to-back requests: saturation, with the"
          " client threads sharing the server's CPUs)")
    print(f"{args.annotators} annotators, {args.images} images ({qa} in the QA sample, which"
          f" several annotators label), {args.seconds:.0f} s per window,"
          f" waitress threads {args.threads}, load average {os.getloadavg()[0]:.2f}"
          f" on {os.cpu_count()} CPUs")
    for title, stats, elapsed, _ in windows:
        requests = len(stats.next_ms) + len(stats.submit_ms)
        print(f" {title}:")
        for label, values in (("next image (GET /label)", stats.next_ms),
                              ("submit label (POST /label/<id>)", stats.submit_ms)):
            print(f"  {label:<34} n={len(values):>6}  p50 {percentile(values, 50):7.1f} ms"
                  f"  p95 {percentile(values, 95):7.1f} ms  p99 {percentile(values, 99):7.1f} ms"
                  f"  mean {statistics.fmean(values) if values else float('nan'):7.1f} ms")
        print(f"  requests/s {requests / elapsed:.1f}  labels/s"
              f" {len(stats.submit_ms) / elapsed:.1f}")
        print(f"  errors {sum(stats.errors.values())} {stats.errors or ''}")
        print(f"  'database is locked' answers {stats.locked}; images on more screens at once"
              f" than they need votes {stats.double}")
    print(f" in the server log 'database is locked' {server_log.count('database is locked')};"
          f" images with more labels than they need votes {twice}; integrity_check {integrity}")
    print("reproduce: python bench/load.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
