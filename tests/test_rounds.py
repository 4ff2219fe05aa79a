"""Training rounds end to end on real projects: real digit images, the default backbone on the
CPU, SQLite, the Flask app with CSRF, the CLI, and once the huey worker as a process."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, PASSWORDS, card_images, htmx_headers, login, write_digits

from server import store
from server.app import create_app
from server.cli.main import main
from server.config import CONFIG_NAME, Project
from server.jobs.queue import make_queue
from server.jobs.round import run_round
from server.jobs.runner import ROUND, Heartbeat
from server.jobs.workers import WORKER_NICENESS, start_worker_process, stop_processes
from server.learner import Learner
from server.learner.setup import make_learner
from server.projects import add_user, init_project
from server.simulation.live_server import free_port
from server.store import job_rows
from server.store import rounds as round_store

# Small and in-process: rounds take a couple of seconds on a CPU.
FAST = {"input_size": 32, "loader_workers": 0, "batch_size": 32}
TESTS = Path(__file__).resolve().parent


def configure(project: Project, **settings) -> Project:
    """Rewrite activelabel.toml with some settings changed, as a person would edit it."""
    config = dataclasses.replace(project.config, **settings)
    (project.root / CONFIG_NAME).write_text(config.to_toml(), encoding="utf-8")
    return Project.open(project.root)


class Data:
    """The project's database seen from a test: images with their true digit, votes."""

    def __init__(self, project: Project, digits):
        self.project = project
        self.db = store.connect(project.db_path)
        self.classes = {c["name"]: c["id"] for c in store.classes(self.db)}
        self.truth = {
            r["id"]: str(int(digits.target[int(Path(r["rel_path"]).stem.split("-")[1])]))
            for r in self.db.query("SELECT id, rel_path FROM images")
        }

    def user(self, name: str) -> int:
        return store.get_user_by_name(self.db, name)["id"]

    def label(self, name: str, image_id: int, label: str | None = None) -> int:
        return store.add_vote(self.db, self.user(name), image_id, "label",
                              self.classes[label or self.truth[image_id]])

    def label_per_class(self, name: str, per_class: int, classes=CLASSES) -> list[int]:
        """Give true labels to the first `per_class` images of each of `classes`."""
        chosen = []
        for cls in classes:
            chosen += [i for i in sorted(self.truth) if self.truth[i] == cls][:per_class]
        for image_id in chosen:
            self.label(name, image_id)
        return chosen

    def queue(self) -> dict[int, float]:
        return dict(self.db.execute("SELECT image_id, priority FROM queue").fetchall())

    def predictions(self, round_id: int) -> dict[int, dict]:
        return {r["image_id"]: r for r in self.db.query(
            "SELECT * FROM predictions WHERE round_id = ?", [round_id])}

    def round(self, round_id: int) -> dict:
        return job_rows.get(self.db, "rounds", round_id)

    def new_round(self, strategy: str = "margin") -> int:
        return job_rows.queue(self.db, "rounds", self.user("admin"), strategy=strategy)[0]


def make_project(folder: Path, digits, count: int, **settings) -> Project:
    write_digits(folder / "images", digits, count)
    project, _ = init_project(folder / "project", folder / "images", CLASSES, seed=7)
    for name, role in (("admin", "admin"), ("ann", "annotator"), ("bob", "annotator")):
        add_user(project, name, role, PASSWORDS[name])
    return configure(project, **{**FAST, **settings})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """60 images, 3 true labels in each class, and one finished margin round. Tests that use
    it only read, or restore what they change."""
    project = make_project(tmp_path_factory.mktemp("trained"), digits, 60)
    data = Data(project, digits)
    labeled = data.label_per_class("ann", 3)
    round_id = data.new_round("margin")
    summary = run_round(project, round_id)
    yield data, labeled, round_id, summary
    data.db.conn.close()


@pytest.fixture
def small(project, digits):
    """conftest's 40-image project, set up for fast rounds."""
    data = Data(configure(project, **FAST), digits)
    yield data
    data.db.conn.close()


def client_for(project: Project, name: str):
    client = create_app(project.root, {"TESTING": True}).test_client()
    return client, login(client, name)


def queue_round_in_the_browser(client, token, strategy: str) -> int:
    """'Retrain now' with `strategy` on the admin page; the new round's id."""
    response = client.post("/admin/rounds/", data={"strategy": strategy},
                           headers=htmx_headers(token))
    return int(re.search(r"Round (\d+)", response.get_data(as_text=True)).group(1))


def status_when_done(client, worker, seconds: float = 180) -> str:
    """The admin's round status once it stops polling, while `worker` keeps running."""
    deadline = time.monotonic() + seconds
    while polling(status := client.get("/admin/rounds/status").get_data(as_text=True)):
        assert time.monotonic() < deadline, status
        assert worker.poll() is None, "the worker stopped"
        time.sleep(0.25)
    return status


def polling(html: str) -> bool:
    """Whether the status fragment asks htmx to fetch it again (a round is active)."""
    return 'hx-get="/admin/rounds/status"' in html and 'hx-trigger="load delay:500ms"' in html


# -- one round, read back -----------------------------------------------------------------

def test_round_ranks_the_pool_and_stores_predictions(trained):
    data, labeled, round_id, summary = trained
    row = data.round(round_id)
    assert row["status"] == "done" and row["mode"] == "head" and row["message"] == "done"
    assert row["labels_used"] == len(labeled) == summary["labels_used"] == 30
    assert row["pool_size"] == 30
    assert 0.0 <= row["accuracy"] <= 1.0
    assert set(json.loads(row["per_class"])) == set(CLASSES)

    predictions = data.predictions(round_id)
    pool = set(data.truth) - set(labeled)
    assert set(predictions) == pool
    assert sorted(p["rank"] for p in predictions.values()) == list(range(len(pool)))
    assert {p["class_id"] for p in predictions.values()} <= set(data.classes.values())
    # The queue is the ranking now.
    assert data.queue() == {i: float(p["rank"]) for i, p in predictions.items()}
    # Margin ranks the most uncertain first: scores fall with the rank.
    scores = [p["score"] for p in sorted(predictions.values(), key=lambda p: p["rank"])]
    assert scores == sorted(scores, reverse=True)


def test_next_images_are_the_top_ranked_with_the_models_suggestion(trained):
    data, _, round_id, _ = trained
    by_rank = sorted(data.predictions(round_id).values(), key=lambda p: p["rank"])
    client, _ = client_for(data.project, "bob")
    html = client.get("/label").get_data(as_text=True)
    assert card_images(html) == [by_rank[0]["image_id"], by_rank[1]["image_id"]]
    top = by_rank[0]
    name = next(n for n, i in data.classes.items() if i == top["class_id"])
    assert (f"Model suggests <strong>{name}</strong> ({top['confidence'] * 100:.0f}% sure)"
            in html)

    # show_suggestion = false: the same card without the model's guess (no anchoring).
    quiet = configure(data.project, show_suggestion=False)
    try:
        client, _ = client_for(quiet, "bob")
        html = client.get("/label").get_data(as_text=True)
    finally:
        configure(data.project, show_suggestion=True)
    assert card_images(html)[0] == top["image_id"]
    assert "Model suggests" not in html


def test_history_page_status_and_predictions_csv(trained):
    data, labeled, round_id, _ = trained
    client, _ = client_for(data.project, "admin")
    row = data.round(round_id)

    status = client.get("/admin/rounds/status").get_data(as_text=True)
    assert not polling(status) and "hx-get" not in status
    assert f"Round {round_id} finished: 30 labels" in status
    assert f"estimated accuracy {row['accuracy'] * 100:.1f}%" in status

    page = client.get("/admin/rounds/").get_data(as_text=True)
    assert '<svg class="curve"' in page and "<polyline" in page
    history = re.search(rf'<tr id="round-{round_id}">(.*?)</tr>', page, re.S).group(1)
    assert "done" in history and "margin" in history and "head" in history
    assert ">30<" in history and f"{row['accuracy'] * 100:.1f}%" in history
    for name, accuracy in json.loads(row["per_class"]).items():
        assert f"{name} {accuracy * 100:.0f}%" in history

    response = client.get(f"/admin/rounds/{round_id}/predictions.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 30 and [int(r["rank"]) for r in rows] == list(range(30))
    assert {r["predicted"] for r in rows} <= set(CLASSES)
    assert all(r["file"].startswith("digit-") for r in rows)
    assert client.get("/admin/rounds/99/predictions.csv").status_code == 404

    latest = client.get("/admin/rounds/latest.json").get_json()
    assert latest["id"] == round_id and latest["status"] == "done"


def test_annotators_cannot_reach_the_round_controls(trained):
    data, _, round_id, _ = trained
    client, token = client_for(data.project, "ann")
    for path in ("/admin/rounds/", "/admin/rounds/status", "/admin/rounds/latest.json",
                 f"/admin/rounds/{round_id}/predictions.csv"):
        assert client.get(path).status_code == 403, path
    response = client.post("/admin/rounds/", data={"strategy": "margin"},
                           headers=htmx_headers(token))
    assert response.status_code == 403
    assert job_rows.active(data.db, "rounds") is None


def test_a_round_runs_once(small):
    # A second job for a round already running (two enqueues racing) must neither run it
    # again nor mark it failed: the first job is still working on it.
    round_id = small.new_round()
    job_rows.start(small.db, "rounds", round_id, "round")
    with pytest.raises(store.StoreError, match="is running, not queued"):
        run_round(small.project, round_id)
    assert small.round(round_id)["status"] == "running"


# -- rounds that change things ----------------------------------------------------------------

def test_a_failed_round_leaves_the_previous_ranking_serving(small):
    small.label_per_class("ann", 2, classes=["0", "1"])
    first = small.new_round()
    run_round(small.project, first)
    ranked = small.queue()
    # Every label of digit 1 is taken back: one class is left, and the next round fails.
    for annotation in small.db.query(
        "SELECT a.id FROM annotations a WHERE a.class_id = ?", [small.classes["1"]]
    ):
        store.retract(small.db, small.user("ann"), annotation["id"])
    after_undo = small.queue()
    assert set(after_undo) > set(ranked)  # the undone images are back in the queue
    # The next round cannot build its network: its checkpoint file is gone.
    configure(small.project, checkpoint=str(small.project.root / "gone.pth"))
    second = small.new_round()
    with pytest.raises(Exception, match="gone.pth does not exist"):
        run_round(Project.open(small.project.root), second)
    row = small.round(second)
    assert row["status"] == "failed"
    assert "gone.pth does not exist" in row["error"]
    assert small.queue() == after_undo  # the first round's ranking still serves
    assert job_rows.active(small.db, "rounds") is None
    # bob is handed the first round's top-ranked images.
    by_rank = sorted(small.predictions(first).values(), key=lambda p: p["rank"])
    bob, _ = client_for(small.project, "bob")
    assert card_images(bob.get("/label").get_data(as_text=True)) == [
        p["image_id"] for p in by_rank[:2]]

    client, _ = client_for(small.project, "admin")
    status = client.get("/admin/rounds/status").get_data(as_text=True)
    assert not polling(status)
    assert f"Round {second} failed: checkpoint" in status
    assert f"The previous ranking (round {first}) is still serving." in status


def test_a_finetune_round_maps_its_columns_to_the_labeled_classes(small):
    project = configure(small.project, backbone="test_efficientnet", pretrained=False,
                        training_mode="finetune")
    labeled = small.label_per_class("ann", 3, classes=["2", "5", "9"])
    round_id = small.new_round("entropy")
    summary = run_round(project, round_id)
    assert summary["mode"] == "finetune" and summary["labels_used"] == len(labeled)
    row = small.round(round_id)
    assert row["status"] == "done" and row["mode"] == "finetune"
    predictions = small.predictions(round_id).values()
    assert len(predictions) == 40 - len(labeled)
    assert {p["class_id"] for p in predictions} <= {small.classes[c] for c in ("2", "5", "9")}
    assert all(1 / 3 - 1e-6 <= p["confidence"] <= 1 for p in predictions)


class VotingLearner(Learner):
    """The real learner; while it trains, bob labels an image the round snapshotted as
    unlabeled (annotators keep working while a round runs)."""

    def __init__(self, project: Project, vote):
        base = make_learner(project)
        super().__init__(base.config, base.cache_root)
        self.vote = vote

    def fit(self, *args, **kwargs):
        self.vote()
        return super().fit(*args, **kwargs)


def test_a_vote_during_a_round_is_kept_and_its_image_stays_out_of_the_queue(small):
    small.label_per_class("ann", 2, classes=["0", "1", "2"])
    image = min(small.queue())
    round_id = small.new_round()
    learner = VotingLearner(small.project, lambda: small.label("bob", image))
    run_round(small.project, round_id, learner)
    assert small.round(round_id)["status"] == "done"
    assert image in small.predictions(round_id)  # it was in the round's snapshot...
    assert image not in small.queue()  # ...but publishing did not put it back
    assert store.state_of(small.db, image)["status"] == "agreed"
    votes = list(small.db.query("SELECT user_id FROM annotations WHERE image_id = ?", [image]))
    assert votes == [{"user_id": small.user("bob")}]
    handed = store.next_images(small.db, small.user("ann"), n=100)
    assert image not in handed and len(handed) == len(small.queue())


def test_votes_and_undos_between_the_publishing_transactions_are_kept(small, monkeypatch):
    # The round stores its predictions and builds the new queue a few rows per transaction,
    # pausing between them so people's writes get in: here a vote and an undo land in such a
    # pause, and the queue switched to afterwards reflects both.
    first_labels = small.label_per_class("ann", 2, classes=["0", "1", "2"])
    undone = first_labels[0]
    undo_id = small.db.execute("SELECT max(id) FROM annotations WHERE image_id = ?",
                               [undone]).fetchone()[0]
    answered = min(small.queue())
    happened = []

    def people_write_in_the_pause() -> None:
        if not happened:
            small.label("bob", answered)
            store.retract(small.db, small.user("ann"), undo_id)
            happened.append(True)

    monkeypatch.setattr(round_store, "PREDICTION_CHUNK", 5)
    monkeypatch.setattr(round_store, "pause_for_writers", people_write_in_the_pause)
    round_id = small.new_round()
    run_round(small.project, round_id)
    assert happened and small.round(round_id)["status"] == "done"
    queue, ranked = small.queue(), small.predictions(round_id)
    assert answered in ranked and answered not in queue  # answered mid-publish: gone
    assert undone not in ranked and undone in queue  # undone mid-publish: back, after
    assert queue[undone] > max(queue[i] for i in queue if i in ranked)  # every ranked image
    assert {i for i in queue if i != undone} == set(ranked) - {answered}
    assert all(queue[i] == ranked[i]["rank"] for i in queue if i in ranked)
    assert [r["name"] for r in small.db.query(
        "SELECT name FROM sqlite_master WHERE tbl_name LIKE 'queue%' AND type = 'table'")] \
        == ["queue"]


def test_retrain_now_queues_one_round_and_the_status_polls_until_it_is_done(small):
    small.label_per_class("ann", 2, classes=["3", "8"])
    client, token = client_for(small.project, "admin")
    response = client.post("/admin/rounds/", data={"strategy": "most_fun"},
                           headers=htmx_headers(token))
    assert response.status_code == 400
    assert "entropy" in response.get_data(as_text=True)  # the known ones are listed
    assert job_rows.active(small.db, "rounds") is None

    response = client.post("/admin/rounds/", data={"strategy": "entropy"},
                           headers=htmx_headers(token))
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and polling(html)
    round_id = int(re.search(r"Round (\d+) \(entropy\) is queued", html).group(1))
    # A second click while it waits queues nothing new.
    again = client.post("/admin/rounds/", data={"strategy": "margin"},
                        headers=htmx_headers(token))
    assert f"Round {round_id} (entropy) is queued" in again.get_data(as_text=True)
    assert [r["id"] for r in job_rows.history(small.db, "rounds")] == [round_id]
    # The job waits in huey's SQLite queue inside the project folder, for the worker.
    assert (small.project.root / "jobs.db").is_file()
    assert make_queue(small.project).huey.pending_count() == 1

    # A plain form post (no htmx) redirects to the history.
    job_rows.fail(small.db, "rounds", round_id, "cancelled by the test")
    response = client.post("/admin/rounds/", data={"strategy": "entropy",
                                                   "csrf_token": token})
    assert response.status_code == 302 and response.location.endswith("/admin/rounds/")
    round_id = job_rows.active(small.db, "rounds")["id"]

    job_rows.start(small.db, "rounds", round_id, "round")  # what the worker does first
    status = client.get("/admin/rounds/status").get_data(as_text=True)
    assert polling(status) and f"Round {round_id} (entropy) is running" in status
    small.db.execute("UPDATE rounds SET status = 'queued' WHERE id = ?", [round_id])
    run_round(small.project, round_id)
    status = client.get("/admin/rounds/status").get_data(as_text=True)
    assert not polling(status) and "hx-get" not in status
    assert f"Round {round_id} finished: 4 labels" in status and "entropy" in status


def test_a_silent_running_round_is_shown_failed(small):
    round_id = small.new_round()
    job_rows.start(small.db, "rounds", round_id, "round")
    small.db.execute("UPDATE rounds SET heartbeat = ? WHERE id = ?",
                     [time.time() - 3600, round_id])
    client, _ = client_for(small.project, "admin")
    status = client.get("/admin/rounds/status").get_data(as_text=True)
    assert not polling(status)
    assert f"Round {round_id} failed: the worker stopped while running this round" in status
    assert "The queue keeps its seeded shuffle order." in status  # no round finished yet


def test_the_heartbeat_marks_a_running_round_alive(small):
    round_id = small.new_round()
    job_rows.start(small.db, "rounds", round_id, "round")
    small.db.execute("UPDATE rounds SET heartbeat = 0 WHERE id = ?", [round_id])
    with Heartbeat(small.project.db_path, ROUND, round_id, every=0.05):
        deadline = time.monotonic() + 10
        while small.round(round_id)["heartbeat"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert small.round(round_id)["heartbeat"] > time.time() - 60


def test_retraining_starts_by_itself_after_every_n_labels(small):
    project = configure(small.project, retrain_every=3, strategy="least_confidence")
    client, token = client_for(project, "ann")

    def answer(choice: str) -> None:
        image = card_images(client.get("/label").get_data(as_text=True))[0]
        response = client.post(f"/label/{image}", data={"choice": choice},
                               headers=htmx_headers(token))
        assert response.status_code == 200

    answer(str(small.classes["4"]))
    answer("skip")  # skips and unsure answers are not labels
    answer(str(small.classes["5"]))
    assert job_rows.history(small.db, "rounds") == []
    answer(str(small.classes["4"]))  # the third label
    [row] = job_rows.history(small.db, "rounds")
    assert row["status"] == "queued" and row["strategy"] == "least_confidence"
    assert row["requested_by"] is None
    assert make_queue(project).huey.pending_count() == 1
    for _ in range(3):  # more labels while it waits queue nothing more
        answer(str(small.classes["6"]))
    assert len(job_rows.history(small.db, "rounds")) == 1


def test_an_unreachable_task_queue_is_a_clear_error_and_loses_no_vote(small, runner):
    # jobs.redis_url points where nothing listens: 'Retrain now' says the job was not
    # started (503, the round row failed with the reason), an automatic round does not turn
    # the annotator's vote into an error, and `retrain --no-wait` exits with the reason.
    project = configure(small.project, retrain_every=1,
                        redis_url=f"redis://127.0.0.1:{free_port()}/0")
    admin, token = client_for(project, "admin")
    response = admin.post("/admin/rounds/", data={"strategy": "margin"},
                          headers=htmx_headers(token))
    assert response.status_code == 503
    text = response.get_data(as_text=True)
    assert text.startswith("The job was not started: could not queue the job:"), text
    [row] = job_rows.history(small.db, "rounds")
    assert row["status"] == "failed" and "could not queue the job" in row["error"]
    assert "could not queue the job" in admin.get("/admin/rounds/status").get_data(as_text=True)

    ann, ann_token = client_for(project, "ann")
    image = card_images(ann.get("/label").get_data(as_text=True))[0]
    response = ann.post(f"/label/{image}", data={"choice": str(small.classes["3"])},
                        headers=htmx_headers(ann_token))
    assert response.status_code == 200  # the vote is saved; the failed round is the admin's
    assert small.db.execute("SELECT count(*) FROM annotations WHERE image_id = ?",
                            [image]).fetchone()[0] == 1
    assert len(job_rows.history(small.db, "rounds")) == 2

    result = runner.invoke(main, ["retrain", str(project.root), "--no-wait"])
    assert result.exit_code == 1
    assert "Error: could not queue the job:" in result.output
    assert "Traceback" not in result.output


# -- the command line -----------------------------------------------------------------------

def test_cli_retrain_runs_a_round_and_reports_unreadable_images(small, runner):
    # The project's own loader setting: one DataLoader process decoding images.
    project = configure(small.project, loader_workers=1)
    labeled = small.label_per_class("ann", 2, classes=["0", "1", "2"])
    damaged = next(i for i in sorted(small.queue()))
    path = Path(small.db.execute("SELECT path FROM images WHERE id = ?", [damaged]).fetchone()[0])
    path.write_bytes(path.read_bytes()[:50])  # truncated on disk after the import

    result = runner.invoke(main, ["retrain", str(project.root), "--strategy", "least_confidence"])
    assert result.exit_code == 0, result.output
    round_id = job_rows.history(small.db, "rounds")[0]["id"]
    assert f"Round {round_id} done with least_confidence (head mode)" in result.output
    assert f"labels used: {len(labeled)}" in result.output
    assert "estimated accuracy (cross-validated): " in result.output
    assert "1 images could not be read and were left out" in result.output
    assert damaged not in small.predictions(round_id)
    assert len(small.predictions(round_id)) == 40 - len(labeled) - 1
    assert small.round(round_id)["message"].endswith("1 images could not be read and were"
                                                     " left out")

    result = runner.invoke(main, ["retrain", str(project.root), "--strategy", "nope"])
    assert result.exit_code == 1
    assert "unknown strategy 'nope'" in result.output and "cluster_margin" in result.output

    result = runner.invoke(main, ["retrain", str(project.root), "--no-wait"])
    assert result.exit_code == 0, result.output
    queued = job_rows.active(small.db, "rounds")
    assert f"Round {queued['id']} queued (diverse_margin)" in result.output  # the default
    assert queued["status"] == "queued" and make_queue(project).huey.pending_count() == 1
    result = runner.invoke(main, ["retrain", str(project.root)])
    assert result.exit_code == 1 and "already queued or running" in result.output


def test_cli_retrain_explains_a_round_that_cannot_train(small, runner):
    configure(small.project, checkpoint=str(small.project.root / "gone.pth"))
    result = runner.invoke(main, ["retrain", str(small.project.root)])
    assert result.exit_code == 1
    assert "failed: checkpoint" in result.output and "gone.pth does not exist" in result.output
    assert job_rows.history(small.db, "rounds")[0]["status"] == "failed"


def test_a_round_with_labels_in_one_class_is_a_cold_start(small, runner):
    """One class labeled: no model can be trained, so the round orders the queue by
    typicality instead of failing; the card then shows no model suggestion."""
    labeled = small.label_per_class("ann", 3, classes=["7"])
    result = runner.invoke(main, ["retrain", str(small.project.root)])
    assert result.exit_code == 0, result.output
    assert "cold start (labels in 1 class yet)" in result.output
    assert "input size" not in result.output  # set in the settings: nothing to explain
    row = job_rows.history(small.db, "rounds")[0]
    assert row["status"] == "done" and row["mode"] == "cold start"
    predictions = small.predictions(row["id"])
    assert len(predictions) == 40 - len(labeled) and not set(predictions) & set(labeled)
    assert all(p["class_id"] is None and p["confidence"] is None for p in predictions.values())
    queue = small.queue()
    assert sorted(queue, key=queue.get) == sorted(predictions,
                                                  key=lambda i: predictions[i]["rank"])
    bob, _ = client_for(small.project, "bob")
    card = bob.get("/label").get_data(as_text=True)
    first = min(predictions, key=lambda i: predictions[i]["rank"])
    assert card_images(card)[0] == first and "class=\"suggestion\"" not in card


def test_a_round_with_every_image_labeled_trains_and_measures(small, runner, tmp_path):
    """Nothing left to rank: the round still trains, says so and estimates its accuracy; the
    audit and the export work on the finished project."""
    for image_id in sorted(small.truth):
        small.label("ann", image_id)
    result = runner.invoke(main, ["retrain", str(small.project.root)])
    assert result.exit_code == 0, result.output
    row = job_rows.history(small.db, "rounds")[0]
    assert row["status"] == "done" and row["mode"] == "head" and row["pool_size"] == 0
    assert "nothing left to rank: every image is labeled" in row["message"]
    assert row["accuracy"] is not None and f"{row['accuracy']:.1%}" in result.output
    assert "nothing left to rank" in result.output
    assert small.predictions(row["id"]) == {} and small.queue() == {}
    out = tmp_path / "labels.csv"
    result = runner.invoke(main, ["export", str(small.project.root), str(out), "--format",
                                  "csv"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1 + len(small.truth)
    result = runner.invoke(main, ["audit", str(small.project.root), "--out",
                                  str(tmp_path / "suspects.csv")])
    assert result.exit_code == 0, result.output
    assert f"{len(small.truth)} consensus labels ranked" in result.output


def test_the_admin_prepares_the_queue_before_labels_exist(small):
    client, _ = client_for(small.project, "admin")
    status = client.get("/admin/rounds/status").get_data(as_text=True)
    assert "Prepare queue</button>" in status and "Retrain now</button>" not in status
    small.label_per_class("ann", 1, classes=["3", "4"])
    status = client.get("/admin/rounds/status").get_data(as_text=True)
    assert "Retrain now</button>" in status and "Prepare queue</button>" not in status


def test_a_folder_of_photos_gets_an_input_size_from_its_images(tmp_path, runner):
    """No input_size set: 640x480 colour images and scikit-learn's two real photos
    (640x427) are embedded at the backbone's native 224 px, and the round says why."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(6):
        pixels = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"generated-{index}.jpg")
    for index, photo in enumerate(load_sample_images().images):
        Image.fromarray(photo).save(folder / f"sample-{index}.jpg")
    result = runner.invoke(main, ["init", str(tmp_path / "p"), "--images", str(folder),
                                  "--classes", "photo,other"])
    assert result.exit_code == 0, result.output
    configure(Project.open(tmp_path / "p"), loader_workers=0)
    result = runner.invoke(main, ["retrain", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert ("input 224 px, from the images' typical side 480 px, capped at efficientnet_lite0's"
            " native 224") in result.output
    assert (tmp_path / "p" / "cache" / "embeddings" / "tf_efficientnet_lite0-224").is_dir()


# -- processes --------------------------------------------------------------------------------

def test_the_worker_process_runs_rounds_queued_in_the_browser(small, monkeypatch, capfd):
    small.label_per_class("ann", 2, classes=["0", "1", "2"])
    # A worker was killed in the middle of a round: it is still marked running.
    orphan = small.new_round()
    job_rows.start(small.db, "rounds", orphan, "round")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a lean worker beside the tests
    # What `activelabel serve` starts: `python -m server worker PROJECT`.
    worker = start_worker_process(small.project.root)
    try:
        # Niced, so a round's computing never slows annotators' pages down.
        assert (os.getpriority(os.PRIO_PROCESS, worker.pid)
                == min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS))
        deadline = time.monotonic() + 60
        while small.round(orphan)["status"] == "running":
            assert time.monotonic() < deadline, "the restarted worker left the orphan running"
            assert worker.poll() is None, "the worker stopped"
            time.sleep(0.2)
        assert "the worker stopped while running this round" in small.round(orphan)["error"]

        client, token = client_for(small.project, "admin")
        round_id = queue_round_in_the_browser(client, token, "cluster_margin")
        status = status_when_done(client, worker)
        assert f"Round {round_id} finished: 6 labels" in status, status
        assert small.round(round_id)["status"] == "done"
        assert len(small.predictions(round_id)) == 34
        # The worker logs what it ran, just after the row says done: wait for the line
        # itself (on a busy machine it can come well after the row).
        log, deadline = "", time.monotonic() + 60
        while f"round {round_id} done" not in log:
            assert time.monotonic() < deadline, f"the worker never logged the round:\n{log}"
            assert worker.poll() is None, "the worker stopped"
            time.sleep(0.1)
            log += capfd.readouterr().err
    finally:
        stop_processes(worker)


def test_the_web_process_never_imports_torch(small):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from conftest import htmx_headers, login
        from server.app import create_app

        app = create_app({str(small.project.root)!r}, {{"TESTING": True}})
        admin = app.test_client()
        token = login(admin, "admin")
        for path in ("/admin/", "/admin/rounds/", "/admin/rounds/status", "/label"):
            assert admin.get(path).status_code == 200, path
        response = admin.post("/admin/rounds/", data={{"strategy": "margin"}},
                              headers=htmx_headers(token))
        assert response.status_code == 200
        print(sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(shutil.which("redis-server") is None,
                    reason="needs Debian's redis-server (the CI command installs it)")
def test_rounds_go_through_redis_when_configured(small, tmp_path):
    # jobs.redis_url: the web process queues the round in Redis, not in the project's SQLite
    # queue, and a worker (which could be on another machine) takes it from there.
    import redis
    from huey import SqliteHuey

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    worker = None
    try:
        connection = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                connection.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)
        project = configure(small.project, redis_url=f"redis://127.0.0.1:{port}/0")
        small.label_per_class("ann", 2, classes=["0", "1", "2"])
        client, token = client_for(project, "admin")
        round_id = queue_round_in_the_browser(client, token, "diverse_margin")
        assert make_queue(project).huey.pending_count() == 1  # waiting in Redis...
        assert connection.dbsize() > 0
        if (project.root / "jobs.db").exists():  # ...and not in the SQLite queue
            assert SqliteHuey("x", filename=str(project.root / "jobs.db")).pending_count() == 0
        worker = start_worker_process(project.root)
        status = status_when_done(client, worker)
        assert f"Round {round_id} finished: 6 labels" in status, status
        assert len(small.predictions(round_id)) == 34
        assert make_queue(project).huey.pending_count() == 0
    finally:
        stop_processes(worker, server)
