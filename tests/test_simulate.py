"""`activelabel simulate` end to end: a real digits project, the real server and worker as
subprocesses driven over HTTP, the learning curve on disk; and its clean errors."""

from __future__ import annotations

import csv
import socket
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from server import live_server
from server import simulate as sim
from server.cli import main
from server.config import Project
from server.demo import write_digits
from server.projects import init_project

CLASSES = [str(d) for d in range(10)]
IMAGES = 150
UNLABELED = 10  # oracle rows dropped: the simulated annotator must skip these images


@pytest.fixture(scope="module")
def digits_project(tmp_path_factory):
    """150 real digits written the way the demo writes them, a project over them, and an
    oracle CSV missing the last UNLABELED rows."""
    root = tmp_path_factory.mktemp("sim")
    full = root / "full-oracle.csv"
    write_digits(root / "digits-images", full, limit=IMAGES)
    project, _ = init_project(root / "digits", root / "digits-images", CLASSES, seed=3)
    with full.open(newline="") as handle:
        rows = list(csv.reader(handle))
    oracle = root / "oracle.csv"
    with oracle.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows[: len(rows) - UNLABELED])
    truth = {name: label for name, label in rows[1:]}
    return project, oracle, truth


def _counts(db_path: Path) -> dict:
    conn = sqlite3.connect(db_path)
    try:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("images", "annotations", "rounds", "users")}
    finally:
        conn.close()


@pytest.fixture
def started(monkeypatch):
    """Every _Processes the simulation starts, to check they were all stopped."""
    seen: list[live_server._Processes] = []
    original = live_server._Processes.start

    def start(self):
        seen.append(self)
        original(self)

    monkeypatch.setattr(live_server._Processes, "start", start)
    return seen


def test_simulation_runs_through_the_product(digits_project, tmp_path, runner, started):
    project, oracle, truth = digits_project
    before = _counts(project.db_path)
    out = tmp_path / "out"
    result = runner.invoke(main, [
        "simulate", str(project.root), "--oracle", str(oracle), "--budget", "40",
        "--batch", "20", "--strategy", "margin", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert f"{UNLABELED} images have no label in the oracle" in result.output
    assert "margin: final test accuracy" in result.output

    # The curve: one row per round, labels growing by the batch, accuracies in [0, 1].
    with (out / "learning_curve.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["strategy"] for r in rows] == ["margin", "margin"]
    assert [int(r["labels"]) for r in rows] == [20, 40]
    for row in rows:
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0
        assert int(row["test_images"]) > 0
    png = out / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
        assert image.size[0] > 300 and image.size[1] > 200

    # The source project is untouched: the simulation worked on a copy.
    assert _counts(project.db_path) == before
    assert before["annotations"] == 0 and before["rounds"] == 0

    # The copy holds what the annotator did through the web pages: 40 labels, all true,
    # none on held-out or unlabeled images, and two finished rounds by the worker.
    copy = out / "sim-margin"
    conn = sqlite3.connect(copy / "activelabel.db")
    try:
        labels = conn.execute(
            "SELECT i.rel_path, c.name FROM annotations a JOIN images i ON i.id = a.image_id"
            " JOIN classes c ON c.id = a.class_id JOIN users u ON u.id = a.user_id"
            " WHERE a.kind = 'label' AND u.name = 'sim-annotator'"
        ).fetchall()
        rounds = conn.execute("SELECT status, labels_used FROM rounds ORDER BY id").fetchall()
    finally:
        conn.close()
    assert len(labels) == 40
    assert all(truth[name] == label for name, label in labels)
    no_oracle = sorted(truth)[-UNLABELED:]
    assert not {name for name, _ in labels} & set(no_oracle)
    test_files = sim.held_out([n for n in truth if n not in no_oracle], seed=3)
    assert not {name for name, _ in labels} & test_files
    assert rounds == [("done", 20), ("done", 40)]
    assert (copy / "server.log").exists() and (copy / "worker.log").exists()

    # Both subprocesses were stopped.
    assert started and all(p.poll() is not None for s in started for p in s.running.values())


def test_server_that_cannot_start_is_reported_with_its_log(
    digits_project, tmp_path, runner, started, monkeypatch
):
    project, oracle, _ = digits_project
    with socket.socket() as taken:  # the port the server is told to use is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(sim, "_free_port", lambda: taken.getsockname()[1])
        result = runner.invoke(main, [
            "simulate", str(project.root), "--oracle", str(oracle), "--budget", "20",
            "--strategy", "random", "--out", str(tmp_path / "out"),
        ])
    assert result.exit_code == 1, result.output
    assert "could not start: the server process exited" in result.output
    assert "server.log" in result.output
    assert "address already in use" in result.output.lower()
    assert started and all(p.poll() is not None for s in started for p in s.running.values())


def _simulate(runner, project, oracle, out, *extra):
    return runner.invoke(main, ["simulate", str(project.root), "--oracle", str(oracle),
                                "--out", str(out), *extra])


def test_unknown_strategy_lists_the_known_ones(digits_project, tmp_path, runner):
    project, oracle, _ = digits_project
    result = _simulate(runner, project, oracle, tmp_path / "o", "--strategy", "margin,psychic")
    assert result.exit_code == 1
    assert "unknown strategy 'psychic'" in result.output
    assert "margin" in result.output and "random" in result.output
    assert not (tmp_path / "o").exists()


def test_out_folder_must_be_empty(digits_project, tmp_path, runner):
    project, oracle, _ = digits_project
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "old.csv").write_text("x")
    result = _simulate(runner, project, oracle, tmp_path / "o")
    assert result.exit_code == 1
    assert "is not empty; choose another --out" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,class\na.png,1\n", "needs a header row with the columns file,label"),
        ("file,label\nnothing-here.png,1\n", "names an image of the project"),
        ("file,label\ndigit-0000.png,eleven\n", "labels that are not classes of the project"),
    ],
)
def test_bad_oracle_files(digits_project, tmp_path, runner, content, message):
    project, _, _ = digits_project
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    result = _simulate(runner, project, bad, tmp_path / "o")
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_oracle_file_and_bad_numbers(digits_project, tmp_path, runner):
    project, oracle, _ = digits_project
    result = _simulate(runner, project, tmp_path / "none.csv", tmp_path / "o")
    assert result.exit_code == 1 and "cannot read" in result.output
    result = _simulate(runner, project, oracle, tmp_path / "o", "--batch", "0")
    assert result.exit_code == 1 and "must be positive" in result.output
    result = _simulate(runner, tmp_path, oracle, tmp_path / "o")
    assert result.exit_code == 1 and "not an activelabel project" in result.output


def test_plan_reports_unmatched_rows_and_uses_the_test_file(digits_project):
    project, _, truth = digits_project
    oracle = {**{name: truth[name] for name in sorted(truth)[:100]}, "ghost.png": "1"}
    test = {name: truth[name] for name in sorted(truth)[100:120]}
    plan = sim.make_plan(Project.open(project.root), oracle, test)
    assert len(plan.test) == 20
    assert plan.trainable == 100
    assert plan.images == IMAGES
    text = "\n".join(plan.notes)
    assert "1 oracle rows name no image" in text and "ghost.png" in text
    assert f"{IMAGES - 120} images have no label in the oracle" in text


def test_embeddings_are_copied_by_content_not_by_id(tmp_path):
    """The copy may number images differently; rows follow the image's sha256."""
    import numpy as np

    from server.learner.cache import EmbeddingCache

    source = EmbeddingCache(tmp_path / "a" / "embeddings" / "net-64", 4)
    source.put(np.array([1, 2, 5]), np.array([[1.0] * 4, [2.0] * 4, [5.0] * 4]))
    source.flush()
    copied = sim.copy_embeddings({"x": 1, "y": 2, "z": 5, "w": 7}, tmp_path / "a",
                                 {"z": 1, "x": 3, "w": 4}, tmp_path / "b")
    assert copied == 2  # w has no embedding in the source, y is not in the copy
    target = EmbeddingCache(tmp_path / "b" / "embeddings" / "net-64", 4)
    assert target.get(np.array([1, 3])).tolist() == [[5.0] * 4, [1.0] * 4]
    assert target.missing(np.array([4])).tolist() == [4]
