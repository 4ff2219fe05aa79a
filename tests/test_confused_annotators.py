"""An annotator who confuses two classes, on real digit images with three people voting:
the agreement page and `activelabel audit` name that annotator and that pair first, and one
key sends their answers on it to review in one step, appended and undoable."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import CLASSES, login, write_digits

from server import store
from server.annotators import agreement_report, fit_annotator_model
from server.app import create_app
from server.cli.main import main
from server.consensus.confused_pairs import confused_pairs
from server.projects import add_user, init_project, open_db

PEOPLE = {"admin": "admin", "ann": "annotator", "bob": "annotator", "cat": "annotator"}
COUNT = 200
CONFUSED = (4, 9)  # cat answers 9 for half of the 4s


def password(name: str) -> str:
    return f"{name}-password-long"


@pytest.fixture
def voted(tmp_path, digits):
    built = build_voted(tmp_path, digits)
    yield built
    built[1].conn.close()


def build_voted(tmp_path, digits):
    """(project, open db, image ids, true digits, {annotator: their answers}): 200 real
    digits, three votes each, the annotator model fitted."""
    folder = tmp_path / "images"
    write_digits(folder, digits, COUNT)
    project, _ = init_project(tmp_path / "project", folder, CLASSES, seed=3, votes_per_image=3,
                              qa_fraction=0.0)
    for name, role in PEOPLE.items():
        add_user(project, name, role, password(name))
    db = open_db(project)
    ids, truth = [], []
    for row in db.query("SELECT id, path FROM images ORDER BY id"):
        ids.append(row["id"])
        truth.append(int(digits.target[int(re.search(r"(\d+)\.png$", row["path"])[1])]))
    truth = np.array(truth)
    class_id = {c["name"]: c["id"] for c in store.classes(db)}
    rng = np.random.default_rng(7)
    said = {}
    for name in ("ann", "bob", "cat"):
        labels = truth.copy()
        wrong = rng.random(COUNT) < 0.05
        labels[wrong] = (truth[wrong] + rng.integers(1, 10, wrong.sum())) % 10
        if name == "cat":
            labels[(truth == CONFUSED[0]) & (rng.random(COUNT) < 0.5)] = CONFUSED[1]
        said[name] = labels
        user_id = store.get_user_by_name(db, name)["id"]
        for image, label in zip(ids, labels, strict=True):
            store.add_vote(db, user_id, image, "label", class_id[str(label)])
    fit_annotator_model(db)
    return project, db, ids, truth, said


def test_a_pair_everyone_finds_hard_is_not_one_persons_confusion():
    base = np.eye(3) * 0.8 + 0.1
    hard = base.copy()
    hard[0] = [0.6, 0.35, 0.05]  # everyone: 0 is often taken for 1
    habit = hard.copy()
    habit[2] = [0.05, 0.05, 0.9]
    odd = hard.copy()
    odd[2] = [0.45, 0.05, 0.5]  # this one answers 0 for 2 nearly half the time
    found = confused_pairs({"a": hard, "b": habit, "c": odd})
    assert [(p.annotator, p.true, p.answered) for p in found] == [("c", 2, 0)]
    assert found[0].rate == pytest.approx(0.45)
    assert found[0].others == pytest.approx((0.1 + 0.05) / 2)
    assert confused_pairs({"only": odd}) == []


def test_the_agreement_page_names_the_annotator_and_the_pair_first(voted):
    project, db, ids, truth, said = voted
    report = agreement_report(db)
    first = report.confused[0]
    assert (first["name"], first["true"], first["answered"]) == ("cat", "4", "9")
    state = {i: store.state_of(db, i) for i in ids}
    names = {c["id"]: c["name"] for c in store.classes(db)}
    expected = [i for i, label in zip(ids, said["cat"], strict=True)
                if label == 9 and names[state[i]["class_id"]] == "4"
                and state[i]["status"] == "agreed"]
    assert first["count"] == len(expected) >= 5
    assert first["images"] == expected
    assert first["rate"] > first["others"] + 0.3

    client = create_app(project.root, {"TESTING": True}).test_client()
    login(client, "admin", password("admin"))
    page = client.get("/admin/agreement/").get_data(as_text=True)
    section = page[page.index('id="confused"'):page.index('id="kappas"')]
    row = re.search(r'<td class="annotator">(\w+)</td><td class="answered">(\w+)</td>'
                    r'<td class="true">(\w+)</td>', section)
    assert row.groups() == ("cat", "9", "4")
    assert section.count('data-key="r"') == len(report.confused)


def test_one_post_sends_those_answers_to_review_and_undo_takes_it_back(voted):
    project, db, ids, truth, said = voted
    first = agreement_report(db).confused[0]
    before = {i: store.state_of(db, i)["status"] for i in ids}
    answers = db.execute("SELECT count(*) FROM annotations").fetchone()[0]
    client = create_app(project.root, {"TESTING": True}).test_client()
    token = login(client, "admin", password("admin"))
    form = {"user_id": first["user_id"], "true_id": first["true_id"],
            "answered_id": first["answered_id"], "csrf_token": token}

    bad = client.post("/admin/agreement/confused/review", data={**form, "true_id": "4x"})
    assert bad.status_code == 400 and "Nothing was sent" in bad.get_data(as_text=True)
    assert db.execute("SELECT count(*) FROM annotations").fetchone()[0] == answers

    sent = client.post("/admin/agreement/confused/review", data=form, follow_redirects=True)
    assert sent.status_code == 200
    waiting = [i for i in first["images"] if before[i] != "disputed"]
    assert f"Sent {len(waiting)} of cat" in sent.get_data(as_text=True)
    requests = db.execute("SELECT image_id FROM annotations WHERE kind = 'review'"
                          " AND source = 'audit' ORDER BY image_id").fetchall()
    assert [r[0] for r in requests] == sorted(waiting)
    assert all(store.state_of(db, i)["status"] == "disputed" for i in first["images"])
    assert set(store.review_queue(db, limit=COUNT)) >= set(first["images"])
    # Sent: the pair is not listed again (nothing of it is left to review).
    assert all(row["name"] != "cat" or row["true"] != "4"
               for row in agreement_report(db).confused)

    undone = client.post("/admin/agreement/confused/undo", data={"csrf_token": token},
                         follow_redirects=True)
    assert f"Took back {len(waiting)} review requests" in undone.get_data(as_text=True)
    assert {i: store.state_of(db, i)["status"] for i in ids} == before
    # Append-only: the requests are still there, each with its retraction.
    assert db.execute("SELECT count(*) FROM annotations").fetchone()[0] == (
        answers + 2 * len(waiting))
    again = client.post("/admin/agreement/confused/undo", data={"csrf_token": token},
                        follow_redirects=True)
    assert "Nothing to undo" in again.get_data(as_text=True)


def test_the_audit_command_lists_the_confused_pair(voted, runner, tmp_path):
    project, *_ = voted
    result = runner.invoke(main, ["audit", str(project.root), "--out",
                                  str(tmp_path / "suspects.csv")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Annotator ")]
    assert lines and lines[0].startswith("Annotator cat answers '9' for '4'"), result.output
