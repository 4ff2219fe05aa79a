"""Finishing the dataset on real digits (test_autolabel.py's trained project: 500 digits, 150
labeled, one real round): the model labels every pool image it can be measured on when the
whole dataset is then expected right at the target, or nothing, saying how far it is; the
spot check is sized for the dataset's margin; the report and the page give the dataset's
measured share right."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CLASSES, login
from test_autolabel import annotation_rows, data, trained  # noqa: F401 (fixtures: F811 below)

from server import store
from server.autolabel.plan import HeldOut, Pool, finish
from server.autolabel.run import preview
from server.autolabel.spot_check import sample_size
from server.cli.main import main
from server.store import auto_labels, job_rows


def reachable(db) -> float:
    """A dataset target that finishing now meets: a point under what it expects."""
    expected = preview(db, 0.51, finish=True).plan.finish.expected
    return float(np.floor(expected * 100) / 100 - 0.01)


def test_finishing_out_of_reach_says_how_far_and_writes_nothing(data, runner):  # noqa: F811
    before = annotation_rows(data.db)
    for args in (["--finish", "0.999"], ["--finish", "0.999", "--dry-run"]):
        result = runner.invoke(main, ["autolabel", str(data.project.root), *args])
        assert result.exit_code != 0, result.output
        assert "finishing now would leave about" in result.output
        assert "label more of the queue and retrain" in result.output
    result = runner.invoke(main, ["autolabel", str(data.project.root), "--finish", "0.9",
                                  "--precision", "0.95"])
    assert result.exit_code != 0 and "Give one" in result.output, result.output
    for bad in ("1.2", "0.3"):
        result = runner.invoke(main, ["autolabel", str(data.project.root), "--finish", bad])
        assert result.exit_code != 0 and "between 0.5 and 1" in result.output, result.output
    assert annotation_rows(data.db) == before


def test_finishing_labels_every_measured_image_and_measures_the_dataset(data, runner):  # noqa: F811
    root = str(data.project.root)
    target = reachable(data.db)
    made = preview(data.db, target, finish=True)
    measured = {c.class_id for c in made.plan.classes if c.threshold is not None}
    _ids, predicted, _confidence = auto_labels.eligible(data.db, made.round["id"])
    assert made.plan.count == int(np.isin(predicted, list(measured)).sum()) > 0
    result = runner.invoke(main, ["autolabel", root, "--finish", str(target)])
    assert result.exit_code == 0, result.output
    assert "finishing the dataset at" in result.output
    labeled = store.status_counts(data.db)["auto"]
    assert labeled == made.plan.count
    # Every unanswered image the model could measure is labeled: nothing of those classes
    # is left in the ranked queue but the spot check.
    sampled = {r[0] for r in data.db.execute("SELECT image_id FROM spot_checks")}
    left = set(data.queue()) - sampled
    left_predicted = {r[0] for r in data.db.execute(
        "SELECT p.held_out_class_id FROM predictions p WHERE p.round_id = ? AND"
        f" p.image_id IN ({','.join('?' * len(left)) or 'NULL'})",
        [made.round["id"], *left])}
    assert not left_predicted & measured
    # The spot check is sized for the dataset's margin (2 points of 500 images), not the
    # auto-labels' own: fewer than the same labels would take at ±2 points of themselves.
    images = store.image_count(data.db)
    assert 0 < len(sampled) < sample_size(labeled, made.plan.expected, 0.02)
    # People answer the spot check truly; the report gives the dataset's share right.
    names = {v: k for k, v in data.classes.items()}
    model = dict(data.db.execute("SELECT image_id, class_id FROM image_state WHERE status ="
                                 " 'auto'").fetchall())
    for image_id in store.next_images(data.db, data.user("ann"), n=len(sampled)):
        store.add_handed_vote(data.db, data.user("ann"), image_id, "label",
                              data.classes[data.truth[image_id]])
    right = sum(names[model[i]] == data.truth[i] for i in sampled)
    result = runner.invoke(main, ["autolabel", root, "--report"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("The dataset ("))
    # The answered spot checks are people's labels now: the model's alone are the rest.
    assert store.status_counts(data.db)["auto"] == labeled - len(sampled)
    assert f"{images} images, {labeled - len(sampled)} labeled by the model alone" in line
    share = (labeled - len(sampled)) / images
    assert f"{1 - share * (1 - right / len(sampled)):.1%} of its labels right" in line, line
    assert f"asked {target:.1%}" in line
    # Per class, a finishing run's auto-labels are not held to the dataset's target.
    assert "below the target" not in result.output.replace(line, "")


def test_the_page_finishes_the_dataset(data):  # noqa: F811
    from server.app import create_app
    from server.jobs.autolabel import run

    client = create_app(data.project.root, {"TESTING": True}).test_client()
    token = login(client, "admin")
    target = reachable(data.db)
    before = annotation_rows(data.db)
    page = client.get(f"/admin/autolabel/?mode=finish&target={target}").get_data(as_text=True)
    assert 'id="finish-summary"' in page and "finishing the dataset at" in page
    assert 'name="mode" value="finish"' in page
    page = client.get("/admin/autolabel/?mode=finish&target=0.999").get_data(as_text=True)
    assert "finishing now would leave about" in page
    assert client.get(f"/admin/autolabel/?mode=all&target={target}").status_code == 400
    assert annotation_rows(data.db) == before
    response = client.post("/admin/autolabel/run", data={
        "target": str(target), "mode": "finish", "margin": "2", "csrf_token": token})
    assert response.status_code == 302
    queued = job_rows.active(data.db, "auto_label_runs")
    assert queued["finish"] == 1 and queued["target"] == pytest.approx(target)
    done = run(data.project, queued["id"])
    assert done["labeled"] == store.status_counts(data.db)["auto"] > 0
    assert done["plan"]["finish"]["dataset_expected"] >= target


def test_finish_is_all_or_nothing_against_the_allowance():
    # Two classes of held-out evidence, 100 pool images at 0.9 each: 10 expected wrong.
    rng = np.random.default_rng(0)
    given = np.repeat([1, 2], 20)
    held_out = HeldOut(given, given.copy(), rng.uniform(0.8, 1.0, 40))
    pool = Pool(np.arange(100), np.repeat([1, 2], 50), np.full(100, 0.9))
    made = finish(0.97, held_out, pool, [1, 2], images=1000, errors_before=15.0)
    assert made.count == 100 and made.finish.errors_new == pytest.approx(10.0)
    assert made.finish.allowed == pytest.approx(30.0) and made.finish.fits
    assert made.finish.expected == pytest.approx(1 - 25 / 1000)
    tight = finish(0.98, held_out, pool, [1, 2], images=1000, errors_before=15.0)
    assert not tight.finish.fits  # 25 expected wrong, 20 allowed
    # A class the round cannot measure holds the finish back: it would label only part of
    # the dataset and spend the allowance there. One nobody's pool image is predicted as
    # does not.
    few = finish(0.97, HeldOut(given[:25], given[:25], held_out.confidence[:25]), pool,
                 [1, 2], images=1000, errors_before=0.0)
    assert "needs" in next(c.reason for c in few.classes if c.class_id == 2)
    assert few.finish.unmeasured == [2] and not few.finish.fits
    ones = Pool(np.arange(50), np.ones(50, np.int64), np.full(50, 0.99))
    assert finish(0.97, HeldOut(given[:25], given[:25], held_out.confidence[:25]), ones,
                  [1, 2], images=1000, errors_before=0.0).finish.fits


def test_classes_are_named_in_the_finish_preview(data, runner):  # noqa: F811
    result = runner.invoke(main, ["autolabel", str(data.project.root), "--finish",
                                  str(reachable(data.db)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "of its labels expected right" in result.output
    for name in CLASSES:
        assert any(line.split()[:1] == [name] for line in result.output.splitlines()), name


def test_a_margin_of_the_dataset_draws_a_smaller_spot_check(data, runner):  # noqa: F811
    root = str(data.project.root)
    made = preview(data.db, 0.9)
    result = runner.invoke(main, ["autolabel", root, "--precision", "0.9", "--margin-of",
                                  "dataset"])
    assert result.exit_code == 0, result.output
    written = store.status_counts(data.db)["auto"]
    sampled = data.db.execute("SELECT count(*) FROM spot_checks").fetchone()[0]
    at = min(0.9, made.plan.expected)
    # ±2 points of 500 images is ±(2 x 500 / written) points of the model's labels.
    assert 0 < sampled < sample_size(written, at, 0.02)
    assert sampled == sample_size(written, at, min(0.25, 0.02 * 500 / written))
    row = job_rows.latest(data.db, "auto_label_runs", status="done")
    assert row["margin_of_dataset"] == 1 and row["finish"] == 0
    result = runner.invoke(main, ["autolabel", root, "--margin-of", "images"])
    assert result.exit_code != 0 and "labels" in result.output


def test_the_page_refuses_an_unknown_margin_scope(data):  # noqa: F811
    from server.app import create_app

    client = create_app(data.project.root, {"TESTING": True}).test_client()
    token = login(client, "admin")
    before = annotation_rows(data.db)
    assert client.get("/admin/autolabel/?target=0.95&margin_of=all").status_code == 400
    assert client.post("/admin/autolabel/run", data={
        "target": "0.95", "margin_of": "all", "csrf_token": token}).status_code == 400
    assert annotation_rows(data.db) == before
    page = client.get("/admin/autolabel/?target=0.95&margin_of=dataset").get_data(as_text=True)
    assert '<option value="dataset" selected>' in page
