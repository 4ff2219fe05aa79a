"""Several annotators on real digit images: overlap and the QA sample, consensus per image,
review and adjudication, the annotator model's weighted vote, and what trains and exports."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile

import krippendorff
import numpy as np
import pytest
from conftest import CLASSES, card_images, htmx_headers, login, write_digits
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

from server import store
from server.annotators import agreement_report, fit_annotator_model
from server.app import create_app
from server.consensus.rules import Decision, Rules, RulesError, decide
from server.projects import add_user, init_project, open_db
from server.store import rounds as round_store

PEOPLE = {"admin": "admin", "rita": "reviewer", "ann": "annotator", "bob": "annotator",
          "cat": "annotator"}


def password(name: str) -> str:
    return f"{name}-password-long"


def make_project(tmp_path, digits, count: int = 40, **settings):
    folder = tmp_path / "images"
    truth = write_digits(folder, digits, count)
    project, _ = init_project(tmp_path / "project", folder, CLASSES, seed=3, **settings)
    for name, role in PEOPLE.items():
        add_user(project, name, role, password(name))
    return project, truth


@pytest.fixture
def opened():
    dbs = []

    def make(project):
        db = open_db(project)
        dbs.append(db)
        return db

    yield make
    for db in dbs:
        db.conn.close()


def uid(db, name: str) -> int:
    return store.get_user_by_name(db, name)["id"]


def cid(db, name: str) -> int:
    return next(c["id"] for c in store.classes(db) if c["name"] == name)


def status(db, image_id: int) -> tuple:
    state = store.state_of(db, image_id)
    names = {c["id"]: c["name"] for c in store.classes(db)}
    return state["status"], names.get(state["class_id"])


def test_the_qa_sample_is_a_seeded_share_of_images_needing_qa_votes(tmp_path, digits, opened):
    project, _ = make_project(tmp_path, digits, 200, qa_fraction=0.25, qa_votes=3)
    db = opened(project)
    rows = list(db.query("SELECT sha256, qa, votes_needed FROM images"))
    qa = [r for r in rows if r["qa"]]
    assert 30 <= len(qa) <= 70  # 25 % of 200, give or take the draw
    assert {r["votes_needed"] for r in qa} == {3}
    assert {r["votes_needed"] for r in rows if not r["qa"]} == {1}
    # The draw follows the content and the seed: the same images again, whichever import.
    assert {r["sha256"] for r in qa} == {
        r["sha256"] for r in rows if store.images.is_qa(3, r["sha256"], 0.25)
    }


def test_two_votes_per_image_go_to_distinct_people_and_decide_the_status(tmp_path, digits,
                                                                        opened):
    project, _ = make_project(tmp_path, digits, 10, votes_per_image=2, qa_fraction=0.0)
    db = opened(project)
    ann, bob, cat = uid(db, "ann"), uid(db, "bob"), uid(db, "cat")
    first, second, third = store.next_images(db, ann, n=3)
    # bob is handed the same images (each needs two votes); ann never gets one twice.
    assert store.next_images(db, bob, n=3) == [first, second, third]
    store.add_vote(db, ann, first, "label", cid(db, "3"))
    assert status(db, first) == ("needs_votes", "3")
    assert first not in store.next_images(db, ann, n=10)
    store.add_vote(db, bob, first, "label", cid(db, "3"))
    assert status(db, first) == ("agreed", "3")
    assert store.state_of(db, first)["agreement"] == 1.0
    # Two people leased it and voted: a third is never handed it.
    assert first not in store.next_images(db, cat, n=10)

    store.add_vote(db, ann, second, "label", cid(db, "1"))
    store.add_vote(db, bob, second, "label", cid(db, "7"))
    assert status(db, second) == ("disputed", None)  # a tie
    assert store.state_of(db, second)["agreement"] == 0.5

    store.add_vote(db, ann, third, "label", cid(db, "4"))
    store.add_vote(db, bob, third, "skip")  # a skip is no vote: the image still needs one
    assert status(db, third) == ("needs_votes", "4")
    store.add_vote(db, cat, third, "unsure")  # an unsure vote disputes it
    assert status(db, third) == ("disputed", "4")
    assert store.review_queue(db, limit=10) == [second, third]
    assert store.status_counts(db)["disputed"] == 2


def test_agreement_below_the_threshold_disputes_a_majority(tmp_path, digits, opened):
    project, _ = make_project(tmp_path, digits, 5, votes_per_image=3, qa_fraction=0.0,
                              agreement_threshold=0.7)
    db = opened(project)
    image = store.next_images(db, uid(db, "ann"), n=1)[0]
    for name, label in (("ann", "2"), ("bob", "2"), ("cat", "5")):
        store.add_vote(db, uid(db, name), image, "label", cid(db, label))
    # Two of three (0.67) is a majority but below 0.7.
    assert status(db, image) == ("disputed", "2")


def test_a_qa_image_asks_for_more_votes_only_as_people_join(tmp_path, digits, opened):
    project, _ = make_project(tmp_path, digits, 40, qa_fraction=1.0, qa_votes=3)
    db = opened(project)
    ann, bob = uid(db, "ann"), uid(db, "bob")
    images = store.next_images(db, ann, n=4)
    for image in images[:3]:
        store.add_vote(db, ann, image, "label", cid(db, "0"))
    # One person labels: a QA image cannot get three votes, so one decides it.
    assert [status(db, i)[0] for i in images[:3]] == ["agreed"] * 3
    assert store.rounds.training_set(db) and len(store.rounds.training_set(db)) == 3
    # A second person starts: those images need a second vote again, and go to bob.
    store.add_vote(db, bob, images[3], "label", cid(db, "0"))
    assert [status(db, i)[0] for i in images[:3]] == ["needs_votes"] * 3
    handed = store.next_images(db, bob, n=40)
    assert set(images[:3]) <= set(handed)
    store.add_vote(db, bob, images[0], "label", cid(db, "0"))
    assert status(db, images[0]) == ("agreed", "0")


def test_adjudication_is_final_appended_and_superseded_only_by_another(tmp_path, digits,
                                                                       opened):
    project, _ = make_project(tmp_path, digits, 6, votes_per_image=2, qa_fraction=0.0)
    db = opened(project)
    ann, bob, rita = uid(db, "ann"), uid(db, "bob"), uid(db, "rita")
    image = store.next_images(db, ann, n=1)[0]
    store.add_vote(db, ann, image, "label", cid(db, "1"))
    store.add_vote(db, bob, image, "label", cid(db, "7"))
    before = list(db.query("SELECT * FROM annotations ORDER BY id"))
    assert image not in {r["id"] for r in store.labeled_images(db)}

    store.adjudicate(db, rita, image, cid(db, "7"))
    assert status(db, image) == ("adjudicated", "7")
    assert store.state_of(db, image)["agreement"] == 0.5  # the votes still disagree
    after = list(db.query("SELECT * FROM annotations ORDER BY id"))
    assert after[: len(before)] == before  # nothing a person typed changed
    assert (after[-1]["kind"], after[-1]["user_id"], after[-1]["class_id"]) == (
        "adjudicate", rita, cid(db, "7"))
    assert store.review_queue(db, limit=5) == []
    # A late vote does not reopen it: the reviewer's word is final.
    store.add_vote(db, uid(db, "cat"), image, "label", cid(db, "1"))
    assert status(db, image) == ("adjudicated", "7")
    # Reopened on request, then settled again; every step stays on record.
    store.request_review(db, uid(db, "admin"), image)
    assert status(db, image)[0] == "disputed"
    store.adjudicate(db, rita, image, cid(db, "1"), gold=True)
    assert status(db, image) == ("adjudicated", "1")
    assert store.gold_answers(db) == {image: cid(db, "1")}
    kinds = [v["kind"] for v in store.image_votes(db, image)]
    assert kinds == ["label", "label", "adjudicate", "label", "review", "adjudicate"]
    with pytest.raises(store.StoreError, match="no class"):
        store.adjudicate(db, rita, image, 10_000)
    with pytest.raises(store.StoreError, match="no image"):
        store.adjudicate(db, rita, 10_000, cid(db, "1"))


def test_only_consensus_labels_train_and_export(tmp_path, digits, opened):
    project, _ = make_project(tmp_path, digits, 8, votes_per_image=2, qa_fraction=0.0)
    db = opened(project)
    ann, bob = uid(db, "ann"), uid(db, "bob")
    agreed, disputed, half = store.next_images(db, ann, n=3)
    for image, (a, b) in ((agreed, ("2", "2")), (disputed, ("2", "9"))):
        store.add_vote(db, ann, image, "label", cid(db, a))
        store.add_vote(db, bob, image, "label", cid(db, b))
    store.add_vote(db, ann, half, "label", cid(db, "4"))
    assert [r["id"] for r in round_store.training_set(db)] == [agreed]
    assert [r["id"] for r in store.labeled_images(db)] == [agreed]
    [report] = store.disputed_images(db)
    assert report["id"] == disputed and report["voters"] == {"ann": "2", "bob": "9"}

    client = create_app(project.root, {"TESTING": True}).test_client()
    login(client, "admin", password("admin"))
    with client.get("/export?format=imagefolder") as response:
        archive = zipfile.ZipFile(io.BytesIO(response.get_data()))
    rows = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
    assert [(r["label"], r["status"], json.loads(r["voters"])) for r in rows] == [
        ("2", "agreed", {"ann": "2", "bob": "2"})]
    listed = list(csv.DictReader(io.StringIO(archive.read("DISPUTED.csv").decode())))
    assert [(json.loads(r["voters"]), r["status"]) for r in listed] == [
        ({"ann": "2", "bob": "9"}, "disputed")]
    alone = client.get("/export?format=disputed").get_data(as_text=True)
    assert alone == archive.read("DISPUTED.csv").decode()


# --- the decision itself, without a database -------------------------------------------

TWO_VOTES = {"needed": 2, "rules": Rules(votes_per_image=2)}


def test_below_the_votes_needed_an_image_needs_votes_with_its_leading_class_so_far():
    assert decide([], 0, **TWO_VOTES) == Decision("needs_votes", None, None)
    assert decide([(1, 3)], 0, **TWO_VOTES) == Decision("needs_votes", 3, 1.0)
    assert decide([(1, 3), (2, 3)], 0, **TWO_VOTES) == Decision("agreed", 3, 1.0)


def test_a_tie_gives_no_class_and_an_unsure_vote_disputes_even_a_unanimous_label():
    assert decide([(1, 3), (2, 5)], 0, **TWO_VOTES) == Decision("disputed", None, 0.5)
    assert decide([(1, 3)], 1, **TWO_VOTES) == Decision("disputed", 3, 0.5)
    assert decide([], 2, **TWO_VOTES) == Decision("disputed", None, 0.0)  # unsure only


def test_a_majority_below_the_agreement_threshold_is_disputed():
    rules = Rules(votes_per_image=3, agreement_threshold=0.7)
    decision = decide([(1, 2), (2, 2), (3, 5)], 0, needed=3, rules=rules)
    assert (decision.status, decision.class_id) == ("disputed", 2)
    assert decision.agreement == pytest.approx(2 / 3)


def test_a_review_request_after_an_adjudication_disputes_the_image_whatever_the_votes():
    votes = [(1, 3), (2, 3)]
    settled = decide(votes, 0, **TWO_VOTES, adjudications=[(10, 5)])
    assert settled == Decision("adjudicated", 5, 0.0)  # no vote said 5
    reopened = decide(votes, 0, **TWO_VOTES, adjudications=[(10, 5)], review_requests=[11])
    assert reopened == Decision("disputed", 3, 1.0)  # the class the votes would give
    assert decide([], 0, **TWO_VOTES, review_requests=[4]) == Decision("disputed", None, None)


def test_an_adjudication_after_a_request_settles_the_image_and_the_latest_one_counts():
    votes = [(1, 3), (2, 5)]
    decision = decide(votes, 1, **TWO_VOTES, adjudications=[(10, 3), (12, 5)],
                      review_requests=[11])
    assert decision.status == "adjudicated" and decision.class_id == 5
    assert decision.agreement == pytest.approx(1 / 3)  # one of three decided votes
    # Without any vote there is nothing to agree with.
    assert decide([], 0, **TWO_VOTES, adjudications=[(3, 5)]) == Decision("adjudicated", 5, None)


def test_a_trusted_annotator_model_breaks_a_tie_toward_the_reliable_annotator():
    careful = [[0.9, 0.1], [0.1, 0.9]]
    careless = [[0.55, 0.45], [0.45, 0.55]]
    model = {"trusted": True, "class_ids": [3, 5], "priors": [0.5, 0.5],
             "confusions": {"1": careful, "2": careless}}
    assert decide([(1, 5), (2, 3)], 0, **TWO_VOTES, model=model).class_id == 5
    untrusted = {**model, "trusted": False}
    assert decide([(1, 5), (2, 3)], 0, **TWO_VOTES, model=untrusted).class_id is None


def test_rules_that_cannot_be_followed_are_refused_with_a_reason():
    with pytest.raises(RulesError, match="at least 1"):
        Rules(votes_per_image=0).check()
    with pytest.raises(RulesError, match="qa_fraction"):
        Rules(qa_fraction=1.5).check()


def noisy_votes(truth: list[int], accuracy: float, rng) -> list[int]:
    wrong = rng.random(len(truth)) > accuracy
    shift = rng.integers(1, 10, len(truth))
    return [(t + s) % 10 if w else t for t, w, s in zip(truth, wrong, shift, strict=True)]


def test_the_annotator_model_weighs_votes_once_overlap_is_enough(tmp_path, digits, opened):
    """A careful annotator and two careless ones vote on every image. Plain majority cannot
    settle an image where all three differ; the fitted model learns whom to trust and
    settles those too, mostly right, and gets more images right overall."""
    count = 120
    project, _ = make_project(tmp_path, digits, count, votes_per_image=3, qa_fraction=0.0)
    db = opened(project)
    ids = [r["id"] for r in db.query("SELECT id FROM images ORDER BY id")]
    paths = [r["path"] for r in db.query("SELECT path FROM images ORDER BY id")]
    truth = [int(digits.target[int(re.search(r"(\d+)\.png$", p)[1])]) for p in paths]
    rng = np.random.default_rng(11)
    said = {"ann": noisy_votes(truth, 0.95, rng), "bob": noisy_votes(truth, 0.6, rng),
            "cat": noisy_votes(truth, 0.6, rng)}
    for name, labels in said.items():
        for image, label in zip(ids, labels, strict=True):
            store.add_vote(db, uid(db, name), image, "label", cid(db, str(label)))
    three_ways = [i for i in range(count)
                  if len({said["ann"][i], said["bob"][i], said["cat"][i]}) == 3]
    assert three_ways and all(status(db, ids[i]) == ("disputed", None) for i in three_ways)
    majority_right = sum(status(db, ids[i])[1] == str(truth[i]) for i in range(count))

    model = fit_annotator_model(db)
    assert model["trusted"]
    accuracy = {name: model["accuracies"][str(uid(db, name))] for name in said}
    assert accuracy["ann"] > 0.85 and accuracy["ann"] > max(accuracy["bob"], accuracy["cat"])
    weighted_right = sum(status(db, ids[i])[1] == str(truth[i]) for i in range(count))
    assert weighted_right > majority_right
    got = [(status(db, ids[i]), said["ann"][i], said["bob"][i], said["cat"][i]) for i in three_ways]
    # Every three-way split now has a class (it stays disputed: one vote in three), right
    # far more often than picking one of the three votes blindly would be.
    assert all(g[0][0] == "disputed" and g[0][1] is not None for g in got)
    right = sum(status(db, ids[i])[1] == str(truth[i]) for i in three_ways)
    assert right / len(three_ways) > 0.5, (right, len(three_ways))
    # Votes arriving later are weighed with the stored model as they come.
    late = store.next_images(db, uid(db, "admin"), n=1)
    assert late == []  # every image has its three votes


def test_the_agreement_page_shows_library_kappa_and_alpha(tmp_path, digits, opened):
    project, _ = make_project(tmp_path, digits, 30, votes_per_image=3, qa_fraction=0.0)
    db = opened(project)
    rng = np.random.default_rng(5)
    ids = [r["id"] for r in db.query("SELECT id FROM images ORDER BY id")]
    truth = [int(x) for x in rng.integers(0, 10, len(ids))]
    for name, accuracy in (("ann", 0.9), ("bob", 0.7), ("cat", 0.6)):
        for image, label in zip(ids, noisy_votes(truth, accuracy, rng), strict=True):
            store.add_vote(db, uid(db, name), image, "label", cid(db, str(label)),
                           seconds=2.5)
    client = create_app(project.root, {"TESTING": True}).test_client()
    login(client, "admin", password("admin"))
    page = client.get("/admin/agreement/").get_data(as_text=True)

    table = np.zeros((len(ids), 3), dtype=int)  # items x raters, class indices
    names = {c["id"]: int(c["name"]) for c in store.classes(db)}
    for image, user, class_id in store.all_votes(db):
        table[ids.index(image), [uid(db, n) for n in ("ann", "bob", "cat")].index(user)] = (
            names[class_id])
    fleiss = statsmodels_fleiss(aggregate_raters(table, n_cat=10)[0])
    alpha = krippendorff.alpha(reliability_data=table.T, level_of_measurement="nominal")
    shown = {key: float(re.search(rf'<dd class="{key}">\s*(-?[\d.]+)', page)[1])
             for key in ("fleiss", "alpha")}
    assert shown == {"fleiss": round(fleiss, 3), "alpha": round(alpha, 3)}
    report = agreement_report(db)
    assert [(a.name, a.labels, a.median_seconds) for a in report.annotators
            if a.labels] == [("ann", 30, 2.5), ("bob", 30, 2.5), ("cat", 30, 2.5)]
    from sklearn.metrics import cohen_kappa_score
    assert report.kappas[("ann", "bob")].kappa == pytest.approx(
        cohen_kappa_score(table[:, 0], table[:, 1]))
    png = client.get("/admin/agreement/confusion.png")
    assert png.mimetype == "image/png" and png.get_data()[:8] == b"\x89PNG\r\n\x1a\n"


def test_review_in_the_browser_flow_over_http(tmp_path, digits, opened):
    project, _ = make_project(tmp_path, digits, 6, votes_per_image=2, qa_fraction=0.0)
    app = create_app(project.root, {"TESTING": True})
    clients = {}
    for name in ("ann", "bob", "rita"):
        clients[name] = app.test_client()
        clients[name].token = login(clients[name], name, password(name))
    db = opened(project)
    image = card_images(clients["ann"].get("/label").get_data(as_text=True))[0]
    assert card_images(clients["bob"].get("/label").get_data(as_text=True))[0] == image
    for name, label in (("ann", "1"), ("bob", "7")):
        clients[name].post(f"/label/{image}", data={"choice": str(cid(db, label))},
                           headers=htmx_headers(clients[name].token))
    # The annotator may not review; the reviewer sees every vote and who gave it.
    assert clients["ann"].get("/review/").status_code == 403
    page = clients["rita"].get("/review/").get_data(as_text=True)
    assert f'data-image-id="{image}"' in page
    assert re.search(r"<td>ann</td>\s*<td>1</td>", page)
    assert re.search(r"<td>bob</td>\s*<td>7</td>", page)
    assert "Disputed: <strong class=\"left\">1</strong>" in page
    response = clients["rita"].post(f"/review/{image}", data={"choice": str(cid(db, "7"))},
                                    headers=htmx_headers(clients["rita"].token))
    assert "Nothing to review" in response.get_data(as_text=True)
    assert status(db, image) == ("adjudicated", "7")
    bad = clients["rita"].post(f"/review/{image}", data={"choice": "x"},
                               headers=htmx_headers(clients["rita"].token))
    assert bad.status_code == 400 and "class id" in bad.get_data(as_text=True)
    gone = clients["rita"].post("/review/999999", data={"choice": str(cid(db, "7"))},
                                headers=htmx_headers(clients["rita"].token))
    assert gone.status_code == 404 and "Nothing was saved" in gone.get_data(as_text=True)


def test_votes_are_blind_unless_the_admin_allows_them(tmp_path, digits, opened):
    project, _ = make_project(tmp_path, digits, 4, votes_per_image=2, qa_fraction=0.0)
    app = create_app(project.root, {"TESTING": True})
    ann, bob = app.test_client(), app.test_client()
    ann_token = login(ann, "ann", password("ann"))
    login(bob, "bob", password("bob"))
    db = opened(project)
    image = card_images(ann.get("/label").get_data(as_text=True))[0]
    ann.post(f"/label/{image}", data={"choice": str(cid(db, "5"))},
             headers=htmx_headers(ann_token))
    page = bob.get("/label").get_data(as_text=True)
    assert card_images(page)[0] == image and "Others said" not in page

    text = (project.root / "activelabel.toml").read_text().replace("blind = true", "blind = false")
    (project.root / "activelabel.toml").write_text(text)
    seeing = create_app(project.root, {"TESTING": True}).test_client()
    login(seeing, "bob", password("bob"))
    page = seeing.get("/label").get_data(as_text=True)
    assert card_images(page)[0] == image
    assert re.search(r"Others said: <span>ann: 5</span>", page)
