"""`activelabel simulate` end to end: a real digits project, the real server and worker as
subprocesses driven over HTTP, the learning curve on disk; and its clean errors."""

from __future__ import annotations

import csv
import socket
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from server import store
from server.cli.main import main
from server.config import Project
from server.dataset.demo import write_digits
from server.projects import init_project
from server.simulation import annotators as crowd
from server.simulation import live_server
from server.simulation import plan as planning
from server.simulation import simulate as sim

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
    assert [int(r["votes"]) for r in rows] == [20, 40]  # one annotator: a vote per label
    assert [int(r["trained_labels"]) for r in rows] == [20, 40]
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
    test_files = planning.held_out([n for n in truth if n not in no_oracle], seed=3)
    assert not {name for name, _ in labels} & test_files
    assert rounds == [("done", 20), ("done", 40)]
    assert (copy / "server.log").exists() and (copy / "worker.log").exists()

    # One annotator who is always right: every label agreed and true.
    with (out / "consensus.csv").open(newline="") as handle:
        (consensus,) = list(csv.DictReader(handle))
    assert consensus["strategy"] == "margin"
    assert (int(consensus["images"]), int(consensus["agreed"]), int(consensus["disputed"]),
            int(consensus["right"])) == (40, 40, 0, 40)
    assert float(consensus["consensus_accuracy"]) == 1.0
    assert "margin: consensus accuracy 1.000 over 40 images (0 disputed, 40 votes)" in (
        result.output)

    # Both subprocesses were stopped.
    assert started and all(p.poll() is not None for s in started for p in s.running.values())


def test_server_that_cannot_start_is_reported_with_its_log(
    digits_project, tmp_path, runner, started, monkeypatch
):
    project, oracle, _ = digits_project
    with socket.socket() as taken:  # the port the server is told to use is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(sim, "free_port", lambda: taken.getsockname()[1])
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
    plan = planning.make_plan(Project.open(project.root), oracle, test)
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


# --- several simulated annotators ----------------------------------------------------------


def _read_votes(copy: Path) -> tuple[dict, dict, dict]:
    """From the simulated project's database, through the store: annotator name ->
    {rel_path: class name} of their effective votes; rel_path -> (status, consensus class)
    of every voted image; user name -> role."""
    paths = {row["id"]: row["rel_path"] for row in planning.source_images(Project.open(copy))}
    db = store.connect(copy / "activelabel.db", migrate=False)
    try:
        users = store.list_users(db)
        names = {c["id"]: c["name"] for c in store.classes(db)}
        votes: dict[str, dict[str, str]] = {}
        by_id = {u["id"]: u["name"] for u in users}
        all_votes = store.all_votes(db)
        for image_id, user_id, class_id in all_votes:
            votes.setdefault(by_id[user_id], {})[paths[image_id]] = names[class_id]
        states = {}
        for image_id in {image_id for image_id, _, _ in all_votes}:
            state = store.state_of(db, image_id)
            states[paths[image_id]] = (state["status"], names.get(state["class_id"]))
    finally:
        db.conn.close()
    return votes, states, {u["name"]: u["role"] for u in users}


def test_several_annotators_vote_on_every_image_and_disagreements_are_disputed(
    digits_project, tmp_path, runner, started
):
    project, oracle, truth = digits_project
    out = tmp_path / "out"
    result = runner.invoke(main, [
        "simulate", str(project.root), "--oracle", str(oracle), "--budget", "30",
        "--batch", "30", "--strategy", "random", "--annotators", "1.0,0.6", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "2 simulated annotators (accuracy 1, 0.6): every image gets 2 votes" in result.output
    assert "--budget 30 counts images, so up to 60 votes" in result.output

    copy = out / "sim-random"
    assert Project.open(copy).config.votes_per_image == 2
    votes, states, roles = _read_votes(copy)
    assert roles == {"sim-admin": "admin", "ann1": "annotator", "ann2": "annotator"}

    # Each annotator voted, in its own session, on the same 30 images: ann1 always right,
    # ann2 wrong on some (another class, never the truth by mistake).
    assert set(votes) == {"ann1", "ann2"}
    assert len(votes["ann1"]) == 30 and set(votes["ann2"]) == set(votes["ann1"])
    assert all(truth[name] == label for name, label in votes["ann1"].items())
    wrong = {name for name, label in votes["ann2"].items() if label != truth[name]}
    assert 3 <= len(wrong) <= 25, wrong  # seeded: about 40 % of 30
    assert all(votes["ann2"][name] in CLASSES for name in wrong)

    # Two votes that differ make a dispute; two that agree, an agreed (and true) label.
    assert set(states) == set(votes["ann1"])
    disputed = {name for name, (status, _) in states.items() if status == "disputed"}
    agreed = {name for name, (status, _) in states.items() if status == "agreed"}
    assert disputed == wrong and agreed == set(states) - wrong
    assert all(states[name][1] == truth[name] for name in agreed)

    # The report (printed and written) says the same as the database.
    right = len(agreed)
    with (out / "consensus.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert {k: row[k] for k in ("strategy", "images", "votes", "agreed", "adjudicated",
                                "disputed", "waiting", "right")} == {
        "strategy": "random", "images": "30", "votes": "60", "agreed": str(len(agreed)),
        "adjudicated": "0", "disputed": str(len(disputed)), "waiting": "0",
        "right": str(right)}
    assert float(row["consensus_accuracy"]) == pytest.approx(right / 30, abs=1e-4)
    assert float(row["final_label_accuracy"]) == 1.0
    assert (f"random: consensus label equals the truth on {right} of 30 images"
            f" ({right / 30:.3f}" in result.output)
    assert (f"random: consensus accuracy {right / 30:.3f} over 30 images"
            f" ({len(disputed)} disputed, 60 votes)") in result.output
    with (out / "annotators.csv").open(newline="") as handle:
        scores = {r["annotator"]: r for r in csv.DictReader(handle)}
    assert (scores["ann1"]["votes"], scores["ann1"]["right"]) == ("30", "30")
    assert (scores["ann2"]["votes"], scores["ann2"]["right"]) == ("30", str(30 - len(wrong)))
    assert f"ann2 (accuracy 0.6): {30 - len(wrong)} of 30 votes right" in result.output

    # The learning curve: 30 images, 60 votes, the round trained on the agreed labels only.
    with (out / "learning_curve.csv").open(newline="") as handle:
        (point,) = list(csv.DictReader(handle))
    assert (point["labels"], point["votes"], point["trained_labels"]) == (
        "30", "60", str(len(agreed)))
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert started and all(p.poll() is not None for s in started for p in s.running.values())


def test_simulated_mistakes_follow_the_accuracy_and_the_seed():
    truth = {f"{i:064x}": str(i % 10) for i in range(3000)}
    answers = crowd.noisy_answers(truth, CLASSES, 0.7, seed=1, position=0)
    wrong = [sha for sha in truth if answers[sha] != truth[sha]]
    assert 0.27 < len(wrong) / len(truth) < 0.33
    # A mistake is any other class, evenly.
    offsets = Counter((int(answers[sha]) - int(truth[sha])) % 10 for sha in wrong)
    assert set(offsets) == set(range(1, 10))
    assert max(offsets.values()) < 2 * min(offsets.values())
    # Same seed and position: the same mistakes; another annotator makes its own.
    assert crowd.noisy_answers(truth, CLASSES, 0.7, seed=1, position=0) == answers
    other = crowd.noisy_answers(truth, CLASSES, 0.7, seed=1, position=1)
    assert other != answers
    assert crowd.noisy_answers(truth, CLASSES, 1.0, seed=1, position=0) == truth
    assert all(truth[s] != a for s, a in
               crowd.noisy_answers(truth, CLASSES, 0.0, seed=1, position=0).items())


@pytest.mark.parametrize(
    ("value", "message"),
    [("1.2", "accuracy 1.2 is not between 0 and 1"),
     ("0.9,,0.8", "expected accuracies separated by commas"),
     ("0.9,good", "'good' is not a number")],
)
def test_bad_annotator_accuracies(digits_project, tmp_path, runner, value, message):
    project, oracle, _ = digits_project
    result = _simulate(runner, project, oracle, tmp_path / "o", "--annotators", value)
    assert result.exit_code == 1, result.output
    assert f"--annotators: {message}" in result.output
    assert not (tmp_path / "o").exists()
