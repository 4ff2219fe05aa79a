"""Auto-labels end to end on real digits: a real round on the CPU, the thresholds chosen on
its held-out predictions, the labels appended from source 'model' (the CLI, dry run first),
a person's vote superseding them, withdrawing them, and every bad input refused with
nothing written."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CLASSES, PASSWORDS, write_digits
from test_rounds import FAST, Data, configure

from server import store
from server.autolabel.plan import MIN_LABELS, HeldOut, PlanError, Pool, plan
from server.autolabel.run import preview, report
from server.cli.main import main
from server.jobs.round import run_round
from server.jobs.runner import ROUND
from server.projects import add_user, init_project
from server.store import auto_labels, job_rows
from server.store import rounds as round_store
from server.store.labels import refresh_state

IMAGES = 500
PER_CLASS = 15  # what a new user labels before the first auto-labels: 150 digits


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """500 real digits, 15 of each class labeled by a person, one round trained: the state a
    test copies before it auto-labels (the round takes a while on the CPU)."""
    root = tmp_path_factory.mktemp("autolabel")
    write_digits(root / "images", digits, IMAGES)
    project, _ = init_project(root / "project", root / "images", CLASSES, seed=3,
                              qa_fraction=0.0)
    project = configure(project, **FAST)
    for name, role in (("admin", "admin"), ("ann", "annotator")):
        add_user(project, name, role, PASSWORDS[name])
    data = Data(project, digits)
    # A seeded random 15 of each class: labels that are like the pool. (The first 15 of
    # each class come from a few writers, and a model measured on them is measured on the
    # wrong images: what the spot check is for.)
    rng = np.random.default_rng(0)
    for name in CLASSES:
        members = [i for i in sorted(data.truth) if data.truth[i] == name]
        for image_id in rng.choice(members, PER_CLASS, replace=False):
            data.label("ann", int(image_id))
    round_id, _ = job_rows.queue(data.db, ROUND.table, None, strategy="entropy")
    run_round(project, round_id)
    data.db.conn.close()
    return root


@pytest.fixture
def data(trained, tmp_path, digits):
    """A fresh copy of the trained project (its database and caches), opened."""
    import shutil

    shutil.copytree(trained, tmp_path / "copy", symlinks=True)
    # The images' paths are absolute: the copy's database still points at the originals,
    # which no test changes.
    from server.config import Project

    opened = Project.open(tmp_path / "copy" / "project")
    found = Data(opened, digits)
    yield found
    found.db.conn.close()


def annotation_rows(db) -> list[tuple]:
    return db.execute("SELECT * FROM annotations ORDER BY id").fetchall()


def test_dry_run_plans_per_class_and_writes_nothing(data, runner):
    before = annotation_rows(data.db)
    result = runner.invoke(main, ["autolabel", str(data.project.root), "--precision", "0.98",
                                  "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Nothing written (--dry-run)" in result.output
    for name in CLASSES:  # one line per class, each with a count or a reason
        assert any(line.split()[:1] == [name] for line in result.output.splitlines()), name
    assert annotation_rows(data.db) == before
    assert store.status_counts(data.db)["auto"] == 0


def test_auto_labels_are_appended_answers_that_meet_the_target(data, runner):
    pool_before = len(data.queue())
    result = runner.invoke(main, ["autolabel", str(data.project.root), "--precision", "0.95"])
    assert result.exit_code == 0, result.output
    rows = list(data.db.query(
        "SELECT a.image_id, a.class_id, a.source, a.user_id, x.confidence, x.round_id"
        " FROM annotations a JOIN auto_answers x ON x.annotation_id = a.id"
        " WHERE a.kind = 'auto'"))
    assert rows, result.output
    names = {v: k for k, v in data.classes.items()}
    right = sum(names[r["class_id"]] == data.truth[r["image_id"]] for r in rows)
    # The truth of these digits, which the model never saw: what it labeled is right at
    # about the target (a few points of slack for 500 images).
    assert right / len(rows) >= 0.9, (right, len(rows))
    serving = job_rows.latest(data.db, "rounds", status="done")
    assert all(r["source"] == "model" and r["user_id"] is None for r in rows)
    assert all(r["round_id"] == serving["id"] and 0.5 < r["confidence"] <= 1.0 for r in rows)
    assert f"{len(rows)} images labeled by the model" in result.output
    # Out of the people's queue (but for the spot check's sample), not in the training set,
    # counted as labeled by the model.
    auto_ids = {r["image_id"] for r in rows}
    sampled = {r[0] for r in data.db.execute("SELECT image_id FROM spot_checks")}
    assert sampled < auto_ids
    assert auto_ids & set(data.queue()) == sampled
    assert len(data.queue()) == pool_before - len(rows) + len(sampled)
    assert not auto_ids & {r["id"] for r in round_store.training_set(data.db)}
    assert store.status_counts(data.db)["auto"] == len(rows)
    assert not auto_ids & {r["id"] for r in store.labeled_images(data.db)}  # not exported
    # The bulk write says what the one-image consensus decides.
    image_id = rows[0]["image_id"]
    state = next(data.db.query("SELECT status, class_id, votes FROM image_state"
                               " WHERE image_id = ?", [image_id]))
    with store.write(data.db):
        refresh_state(data.db, image_id)
    again = next(data.db.query("SELECT status, class_id, votes FROM image_state"
                               " WHERE image_id = ?", [image_id]))
    assert again == state == {"status": "auto", "class_id": rows[0]["class_id"], "votes": 0}


def test_a_persons_vote_supersedes_the_models(data, runner):
    assert runner.invoke(main, ["autolabel", str(data.project.root), "--precision", "0.9",
                                "--no-spot-check"]).exit_code == 0
    model = data.db.execute("SELECT image_id, class_id FROM image_state WHERE status = 'auto'"
                            " ORDER BY image_id LIMIT 2").fetchall()
    first, second = (row[0] for row in model)
    predicted = [row[1] for row in model]
    other = next(c for c in data.classes.values() if c != predicted[0])
    store.add_vote(data.db, data.user("ann"), first, "label", other)
    state = data.db.execute("SELECT status, class_id FROM image_state WHERE image_id = ?",
                            [first]).fetchone()
    assert tuple(state) == ("agreed", other)  # one vote is all this project asks
    # Undoing the person's vote gives the image back to the model's label, which still
    # stands (appended, never removed).
    last = data.db.execute("SELECT max(id) FROM annotations WHERE user_id = ?",
                           [data.user("ann")]).fetchone()[0]
    store.undo_latest(data.db, data.user("ann"), last)
    state = data.db.execute("SELECT status, class_id FROM image_state WHERE image_id = ?",
                            [first]).fetchone()
    assert tuple(state) == ("auto", predicted[0])
    assert auto_labels.auto_answer(data.db, second)["class_id"] == predicted[1]


def test_withdraw_appends_retractions_and_requeues(data, runner):
    root = str(data.project.root)
    assert runner.invoke(main, ["autolabel", root, "--precision", "0.9"]).exit_code == 0
    auto_ids = [r[0] for r in data.db.execute(
        "SELECT image_id FROM image_state WHERE status = 'auto'")]
    assert auto_ids
    before = annotation_rows(data.db)
    result = runner.invoke(main, ["autolabel", root, "--withdraw"])
    assert result.exit_code == 0, result.output
    assert f"Withdrew {len(auto_ids)} auto-labels" in result.output
    after = annotation_rows(data.db)
    assert after[:len(before)] == before  # appended only
    assert len(after) == len(before) + len(auto_ids)
    assert store.status_counts(data.db)["auto"] == 0
    assert set(auto_ids) <= set(data.queue())
    # The bulk withdrawal leaves what refresh_state decides with no answers.
    with store.write(data.db):
        refreshed = refresh_state(data.db, auto_ids[0])
    assert refreshed["status"] == "needs_votes"
    # The same round does not label them again: its labels were withdrawn.
    result = runner.invoke(main, ["autolabel", root, "--precision", "0.9"])
    assert result.exit_code == 0, result.output
    again = {r[0] for r in data.db.execute(
        "SELECT image_id FROM image_state WHERE status = 'auto'")}
    assert not again & set(auto_ids)


@pytest.mark.parametrize("args, message", [
    (["--precision", "1"], "between 0.5 and 1"),
    (["--precision", "0.5"], "between 0.5 and 1"),
    (["--precision", "98"], "between 0.5 and 1"),
    (["--classes", "7,cat"], "no class named 'cat'"),
])
def test_bad_input_is_refused_with_nothing_written(data, runner, args, message):
    before = annotation_rows(data.db)
    result = runner.invoke(main, ["autolabel", str(data.project.root), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert annotation_rows(data.db) == before


def test_a_round_older_than_the_labels_is_refused(data, runner):
    waiting = next(iter(data.queue()))
    data.label("ann", waiting)
    before = annotation_rows(data.db)
    result = runner.invoke(main, ["autolabel", str(data.project.root)])
    assert result.exit_code == 1
    assert "older than the newest labels: 1 answers came after it" in result.output
    assert "Retrain first" in result.output
    assert annotation_rows(data.db) == before


def test_no_finished_round_and_a_class_without_labels(tmp_path, digits, runner):
    write_digits(tmp_path / "images", digits, 60)
    project, _ = init_project(tmp_path / "project", tmp_path / "images", CLASSES + ["cat"],
                              seed=1, qa_fraction=0.0)
    result = runner.invoke(main, ["autolabel", str(project.root)])
    assert result.exit_code == 1 and "no finished round yet" in result.output


def test_plan_needs_evidence_per_class():
    """The thresholds' rules on arrays a round could leave: a class below MIN_LABELS gets a
    reason, and a class whose held-out predictions are right where sure gets a threshold
    whose pool images are at least that sure."""
    rng = np.random.default_rng(0)
    given = np.array([0] * 40 + [1] * 40 + [2] * (MIN_LABELS - 1))
    confidence = rng.uniform(0.5, 1.0, len(given))
    predicted = given.copy()
    wrong = (given == 1) & (confidence < 0.9)  # class 1 is only right when sure
    predicted[wrong] = 0
    pool = Pool(np.arange(300), rng.integers(0, 3, 300), rng.uniform(0.5, 1.0, 300))
    made = plan(0.95, HeldOut(given, predicted, confidence), pool, [0, 1, 2])
    by_class = {c.class_id: c for c in made.classes}
    assert by_class[2].threshold is None and "needs 10" in by_class[2].reason
    # Class 0 takes class 1's unsure images: below 0.9 its predictions are often wrong.
    assert by_class[0].threshold is None or by_class[0].threshold > 0.85
    # Class 1 is predicted only where sure, and right there.
    assert by_class[1].threshold is not None and by_class[1].threshold >= 0.9
    for c in made.classes:
        if c.threshold is not None:
            chosen = made.confidence[made.class_ids == c.class_id]
            assert len(chosen) == c.count and (chosen >= c.threshold).all()
            assert c.expected >= 0.95
    with pytest.raises(PlanError):
        plan(1.0, HeldOut(given, predicted, confidence), pool, [0, 1, 2])


def test_the_admin_page_counts_the_models_labels(data, runner):
    from conftest import login

    from server.app import create_app

    assert runner.invoke(main, ["autolabel", str(data.project.root), "--precision",
                                "0.9"]).exit_code == 0
    count = store.status_counts(data.db)["auto"]
    assert count
    client = create_app(data.project.root, {"TESTING": True}).test_client()
    login(client, "admin")
    page = client.get("/admin/").get_data(as_text=True)
    assert f"{count} labeled by the model" in page


def test_the_spot_check_goes_to_people_blind_and_measures_the_labels(data, runner):
    """A random sample of the new auto-labels goes to the front of the queue, the card
    shows no prediction for it, a skip leaves it for the next person, and the report
    compares the people's answers with the model's labels."""
    from conftest import card_images, login

    from server.app import create_app

    root = str(data.project.root)
    result = runner.invoke(main, ["autolabel", root, "--precision", "0.9"])
    assert result.exit_code == 0, result.output
    sampled = [r[0] for r in data.db.execute("SELECT image_id FROM spot_checks")]
    written = store.status_counts(data.db)["auto"]
    assert 0 < len(sampled) <= written and f"Spot check: {len(sampled)} of them" in result.output
    front = sorted(data.queue().items(), key=lambda item: item[1])[:len(sampled)]
    assert {image_id for image_id, _ in front} == set(sampled)
    # On the labeling card: the image, and no "Model suggests".
    client = create_app(data.project.root, {"TESTING": True}).test_client()
    login(client, "ann")
    page = client.get("/label").get_data(as_text=True)
    assert card_images(page)[0] in sampled and "Model suggests" not in page
    # Ann skips one (still in the queue for others) and answers the rest truly, one wrong
    # on purpose where the model was right.
    skipped, *answered = store.next_images(data.db, data.user("ann"), n=len(sampled))
    store.add_handed_vote(data.db, data.user("ann"), skipped, "skip")
    assert skipped in data.queue()
    names = {v: k for k, v in data.classes.items()}
    model = dict(data.db.execute("SELECT image_id, class_id FROM image_state WHERE status ="
                                 " 'auto'").fetchall())
    flipped = next(i for i in answered if names[model[i]] == data.truth[i])
    for image_id in answered:
        truth = data.truth[image_id]
        if image_id == flipped:
            truth = next(n for n in CLASSES if n != truth)
        store.add_handed_vote(data.db, data.user("ann"), image_id, "label", data.classes[truth])
    expected_right = sum(names[model[i]] == data.truth[i] for i in answered) - 1
    result = runner.invoke(main, ["autolabel", root, "--report"])
    assert result.exit_code == 0, result.output
    overall = next(line for line in result.output.splitlines() if line.startswith("all "))
    assert overall.split()[1:5] == [str(len(answered)), "of", str(len(sampled)),
                                    str(expected_right)], overall


def test_the_page_previews_runs_the_job_and_withdraws_a_class(data):
    """The admin's way: preview (nothing written), start the run (a job, run here as the
    worker would), see the measured table, withdraw one class's labels."""
    from conftest import login

    from server.app import create_app
    from server.jobs.autolabel import run

    client = create_app(data.project.root, {"TESTING": True}).test_client()
    token = login(client, "admin")
    before = annotation_rows(data.db)
    page = client.get("/admin/autolabel/?target=0.95&margin=2").get_data(as_text=True)
    planned = int(page.split("<strong>")[1].split("</strong>")[0])
    assert planned > 0 and "images would be labeled" in page
    assert annotation_rows(data.db) == before
    for bad in ("1.5", "0.4", "abc"):
        response = client.get(f"/admin/autolabel/?target={bad}")
        assert response.status_code == 400, bad
    assert client.post("/admin/autolabel/run", data={"target": "2", "csrf_token": token}
                       ).status_code == 400
    assert client.get("/admin/autolabel/?target=0.95&classes=cat").status_code == 400
    response = client.post("/admin/autolabel/run",
                           data={"target": "0.95", "margin": "2", "csrf_token": token})
    assert response.status_code == 302
    queued = job_rows.active(data.db, "auto_label_runs")
    assert queued["status"] == "queued" and queued["target"] == 0.95
    done = run(data.project, queued["id"])
    assert done["labeled"] == planned == store.status_counts(data.db)["auto"]
    page = client.get("/admin/autolabel/").get_data(as_text=True)
    assert f"{planned} images stand labeled by the model alone" in page
    assert f"Run {queued['id']}: {planned} images labeled by the model" in page
    # Withdraw the class with the most auto-labels.
    counts = auto_labels.auto_label_counts(data.db)
    class_id = max(counts, key=counts.get)
    response = client.post("/admin/autolabel/withdraw",
                           data={"class_id": str(class_id), "csrf_token": token})
    assert response.status_code == 302
    assert class_id not in auto_labels.auto_label_counts(data.db)
    assert store.status_counts(data.db)["auto"] == planned - counts[class_id]
    assert client.post("/admin/autolabel/withdraw", data={"class_id": "999999",
                       "csrf_token": token}).status_code == 400


def test_the_export_says_where_every_label_came_from(data, runner, tmp_path):
    """Default: people's labels only, LABELS.md says so. --labels all: the model's rows
    with source, confidence and the spot check's measure of their class, and LABELS.md
    with the same counts and accuracy the report gives."""
    import csv
    import io
    import zipfile

    root = str(data.project.root)
    assert runner.invoke(main, ["autolabel", root, "--precision", "0.9"]).exit_code == 0
    for image_id in store.next_images(data.db, data.user("ann"), n=500):
        if image_id in {r[0] for r in data.db.execute("SELECT image_id FROM spot_checks")}:
            data.label("ann", image_id)  # the spot check answered, truly
    standing = store.status_counts(data.db)["auto"]
    people = len(store.labeled_images(data.db))

    def exported(*options: str) -> tuple[list[dict], str]:
        out = tmp_path / f"export{len(options)}.zip"
        result = runner.invoke(main, ["export", root, str(out), *options])
        assert result.exit_code == 0, result.output
        with zipfile.ZipFile(out) as archive:
            rows = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
            return rows, archive.read("LABELS.md").decode()

    rows, summary = exported()
    assert len(rows) == people and {r["source"] for r in rows} == {"human"}
    assert "This export holds no auto-labels" in summary
    rows, summary = exported("--labels", "all")
    model = [r for r in rows if r["source"] == "model"]
    assert len(model) == standing and len(rows) == people + standing
    assert all(0.5 < float(r["confidence"]) <= 1 for r in model)
    assert f"{people} labeled by people" in summary and f"{standing} by the model" in summary
    found = auto_labels.spot_check_rows(data.db)
    assert found and all(r["answer"] is not None for r in found)
    names = {v: k for k, v in data.classes.items()}
    for row in report(data.db)["measured"][:-1]:
        if row["checked"]:
            mine = [r for r in model if r["label"] == names[row["class_id"]]]
            assert all(float(r["spot_check"]) == round(row["accuracy"], 4) for r in mine)
    result = runner.invoke(main, ["export", root, str(tmp_path / "bad.zip"), "--labels", "some"])
    assert result.exit_code == 1 and "use human" in result.output


def test_rounds_train_on_auto_labels_only_when_asked(data, runner):
    """Off (the default), the next round trains on people's labels alone; on, on the
    model's too, while its held-out predictions stay people's labels."""
    root = str(data.project.root)
    assert runner.invoke(main, ["autolabel", root, "--precision", "0.9",
                                "--no-spot-check"]).exit_code == 0
    model = store.status_counts(data.db)["auto"]
    people = len(round_store.training_set(data.db))
    for setting, trained_on in ((False, people), (True, people + model)):
        project = configure(data.project, train_on_auto_labels=setting)
        round_id, _ = job_rows.queue(data.db, ROUND.table, None, strategy="entropy")
        summary = run_round(project, round_id)
        assert summary["labels_used"] == trained_on
        assert ("auto-labels too" in job_rows.get(data.db, "rounds", round_id)["message"]
                ) is setting
        given, _, _ = auto_labels.held_out(data.db, round_id)
        assert len(given) == people


def test_runs_sampled_at_different_rates_are_weighted_by_their_labels():
    """Two runs: 900 labels checked 30 times (all right), 100 labels checked 30 times (3
    wrong). The estimate weighs the runs 9:1, lies inside its interval, and one run alone
    gives its own Jeffreys interval."""
    from server.autolabel.spot_check import interval, measure

    rows = ([{"run_id": 1, "class_id": 0, "answer": 0, "unsure": False}] * 30
            + [{"run_id": 2, "class_id": 0, "answer": 0, "unsure": False}] * 27
            + [{"run_id": 2, "class_id": 0, "answer": 1, "unsure": False}] * 3)
    populations = [{"run_id": 1, "class_id": 0, "labels": 900, "confidence": 891.0},
                   {"run_id": 2, "class_id": 0, "labels": 100, "confidence": 95.0}]
    overall = measure(rows, populations, 0.95)[-1]
    assert overall.accuracy == pytest.approx(0.9 * 1.0 + 0.1 * 0.9)
    assert overall.low < overall.accuracy < overall.high < 1.0
    assert overall.expected == pytest.approx(0.986)
    alone = measure(rows[30:], populations[1:], 0.95)[-1]
    assert (alone.low, alone.high) == pytest.approx(interval(27, 30))
    assert alone.below_target is False and interval(27, 30)[1] > 0.95


def test_the_rounds_page_splits_the_images_and_projects_the_rest(data):
    """Each round records what the model could label at the target (the same plan the
    preview makes); the rounds page shows people / model / left and the projection."""
    from conftest import login

    from server.app import create_app
    from server.autolabel.projection import labels_to_finish

    serving = job_rows.latest(data.db, "rounds", status="done")
    assert serving["auto_ready"] == preview(data.db, 0.98).plan.count
    assert serving["auto_ready_target"] == 0.98 and serving["auto_labels"] == 0
    client = create_app(data.project.root, {"TESTING": True}).test_client()
    login(client, "admin")
    page = client.get("/admin/rounds/").get_data(as_text=True)
    finish = page.split('id="finish"')[1].split("</section>")[0]
    assert f"<strong>{serving['labels_used']}</strong> labeled by people" in finish
    assert f"<strong>{serving['pool_size']}</strong> left" in finish
    assert f"could label {serving['auto_ready']} now at 98%" in finish
    assert "Not enough rounds yet" in finish  # one round: no trend
    # The trend: images left halving every 100 labels, from 3,200 at 100 labels, reach
    # 1 % of 10,000 (100) at 600 labels: 300 more after the round at 300.
    points = [(100, 3200), (200, 1600), (300, 800)]
    assert labels_to_finish(points, 10_000) == 300
    assert labels_to_finish([(100, 500), (200, 600), (300, 700)], 10_000) is None
    assert labels_to_finish([(100, 500), (200, 90)], 10_000) == 0


def test_no_grid_shows_a_spot_checked_image(data, runner):
    """Grid verify offers a page of one predicted class: a spot-checked image there would
    be answered under the model's class, not blind. Only the card gets them."""
    from server.store.verify_pages import verify_counts, verify_page

    assert runner.invoke(main, ["autolabel", str(data.project.root), "--precision",
                                "0.9"]).exit_code == 0
    sampled = {r[0] for r in data.db.execute("SELECT image_id FROM spot_checks")}
    assert set(store.next_images(data.db, data.user("admin"), n=len(sampled))) == sampled
    store.release_leases(data.db, data.user("admin"))  # open to others again
    user = data.user("ann")
    offered = set()
    for class_id in verify_counts(data.db, user):
        _round, page = verify_page(data.db, user, class_id, limit=500)
        offered |= {row["image_id"] for row in page}
    assert offered and not offered & sampled


def test_grid_verify_reviews_the_models_labels(data, runner):
    """order=model: a page of the model's labels of a class, least confident first; accept
    confirms them (people's votes), a toggled one is withdrawn and goes to the queue's
    front; undo takes the votes back and the model's labels stand again."""
    import re

    from conftest import htmx_headers, login

    from server.app import create_app

    root = str(data.project.root)
    assert runner.invoke(main, ["autolabel", root, "--precision", "0.9",
                                "--no-spot-check"]).exit_code == 0
    counts = auto_labels.auto_label_counts(data.db)
    class_id = max(counts, key=counts.get)
    client = create_app(data.project.root, {"TESTING": True}).test_client()
    token = login(client, "ann")
    page = client.get(f"/verify/?class={class_id}&order=model").get_data(as_text=True)
    assert "itself (auto-labels)" in page
    shown = [int(i) for i in re.findall(r'name="shown" value="(\d+)"', page)]
    confidence = dict(data.db.execute(
        "SELECT a.image_id, x.confidence FROM annotations a JOIN auto_answers x"
        " ON x.annotation_id = a.id"))
    assert shown and [confidence[i] for i in shown] == sorted(confidence[i] for i in shown)
    assert len(shown) == min(counts[class_id], 48)
    wrong = shown[0]
    response = client.post("/verify/", headers=htmx_headers(token), data={
        "order": "model", "class_id": str(class_id), "shown": [str(i) for i in shown],
        "wrong": [str(wrong)], "csrf_token": token})
    assert response.status_code == 200, response.get_data(as_text=True)
    states = dict(data.db.execute("SELECT image_id, status FROM image_state").fetchall())
    assert all(states[i] == "agreed" for i in shown[1:]) and states[wrong] == "needs_votes"
    assert min(data.queue(), key=data.queue().get) == wrong  # first for the next person
    assert auto_labels.auto_answer(data.db, wrong) is None  # withdrawn
    client.post("/verify/undo", headers=htmx_headers(token),
                data={"order": "model", "csrf_token": token})
    states = dict(data.db.execute("SELECT image_id, status FROM image_state").fetchall())
    assert all(states[i] == "auto" for i in shown[1:])
    # A page that holds an image no longer the model's is refused, nothing written.
    before = annotation_rows(data.db)
    response = client.post("/verify/", headers=htmx_headers(token), data={
        "order": "model", "class_id": str(class_id), "shown": [str(wrong)],
        "csrf_token": token})
    assert response.status_code in (400, 409) and annotation_rows(data.db) == before


def test_a_run_whose_round_went_stale_fails_with_the_reason(data):
    """Previewed, then someone labels before the worker runs it: the job re-plans, refuses
    (the round no longer knows every label), writes nothing, and the page says why."""
    from conftest import login

    from server.app import create_app
    from server.jobs.autolabel import run

    client = create_app(data.project.root, {"TESTING": True}).test_client()
    token = login(client, "admin")
    assert client.post("/admin/autolabel/run", data={"target": "0.95", "csrf_token": token}
                       ).status_code == 302
    queued = job_rows.active(data.db, "auto_label_runs")
    data.label("ann", next(iter(data.queue())))
    before = annotation_rows(data.db)
    with pytest.raises(ValueError, match="older than the newest labels"):
        run(data.project, queued["id"])
    assert annotation_rows(data.db) == before
    assert job_rows.get(data.db, "auto_label_runs", queued["id"])["status"] == "failed"
    page = client.get("/admin/autolabel/").get_data(as_text=True)
    assert f"Auto-label run {queued['id']} failed: round" in page
    assert "Retrain first" in page
