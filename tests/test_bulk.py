"""Many labels per keystroke, on real digit images against the real app and SQLite: the
clustering maths, the clustering job (real backbone once), the cluster bootstrap pages, grid
verify, undo, the errors, and the votes they write counting for consensus."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, card_images, htmx_headers, login, write_digits
from PIL import Image

from server import store
from server.app import create_app
from server.config import CONFIG_NAME, Project
from server.dataset.imaging import copy_path
from server.jobs.clustering import PAGE, run_clustering
from server.learner import clusters
from server.projects import add_user, init_project
from server.store import clusterings, job_rows
from server.store import rounds as round_store

TESTS = Path(__file__).resolve().parent


class PixelLearner:
    """Stands in for the learner where the test is about the plumbing, not the features:
    the embedding of an image is its pixels at 8 x 8 (what the demo's digits are made of)."""

    def __init__(self):
        self.vectors: dict[int, np.ndarray] = {}

    def embed(self, ids, paths, progress=lambda *_: None) -> list[int]:
        for image_id, path in zip(ids, paths, strict=True):
            with Image.open(path) as image:
                small = image.convert("L").resize((8, 8), Image.Resampling.BOX)
            self.vectors[int(image_id)] = 255.0 - np.asarray(small, dtype=np.float32).ravel()
        progress(1.0, "embedded")
        return []

    def embeddings(self, ids, dtype=np.float32) -> np.ndarray:
        return np.stack([self.vectors[int(i)] for i in ids]).astype(dtype)


def configure(project: Project, **settings) -> Project:
    config = dataclasses.replace(project.config, **settings)
    (project.root / CONFIG_NAME).write_text(config.to_toml(), encoding="utf-8")
    return Project.open(project.root)


def truth_of(db, digits) -> dict[int, str]:
    return {r["id"]: str(int(digits.target[int(Path(r["rel_path"]).stem.split("-")[1])]))
            for r in db.query("SELECT id, rel_path FROM images")}


def cluster_now(project: Project, k: int | None = None, real: bool = False) -> int:
    """Run a clustering to the end, on pixels (or on the project's real backbone)."""
    db = store.connect(project.db_path)
    try:
        clustering_id, _ = job_rows.queue(db, "clusterings", None, k=k)
    finally:
        db.conn.close()
    run_clustering(project, clustering_id, None if real else PixelLearner())
    return clustering_id


def grid_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'name="shown" value="(\d+)"', html)]


def cluster_of(html: str) -> tuple[int, int]:
    match = re.search(r'data-clustering-id="(\d+)" data-cluster="(\d+)"', html)
    assert match, html[:2000]
    return int(match.group(1)), int(match.group(2))


class Site:
    """The app over a project, a logged-in client per user, and the database."""

    def __init__(self, project: Project, digits):
        self.project = project
        self.app = create_app(project.root, {"TESTING": True})
        self.db = store.connect(project.db_path)
        self.truth = truth_of(self.db, digits)
        self.classes = {c["name"]: c["id"] for c in store.classes(self.db)}
        self.names = {v: k for k, v in self.classes.items()}
        self.clients: dict[str, tuple] = {}

    def as_user(self, name: str):
        if name not in self.clients:
            client = self.app.test_client()
            self.clients[name] = (client, login(client, name))
        return self.clients[name]

    def get(self, name: str, path: str, htmx: bool = True):
        client, token = self.as_user(name)
        return client.get(path, headers=htmx_headers(token) if htmx else {})

    def post(self, name: str, path: str, data: dict):
        client, token = self.as_user(name)
        return client.post(path, data=data, headers=htmx_headers(token))

    def user(self, name: str) -> int:
        return store.get_user_by_name(self.db, name)["id"]

    def votes(self, source: str | None = None) -> list[dict]:
        sql = ("SELECT a.image_id, a.user_id, a.class_id, a.source, a.seconds FROM annotations a"
               " WHERE a.kind = 'label' AND NOT EXISTS (SELECT 1 FROM annotations r"
               " WHERE r.retracts_id = a.id)")
        rows = list(self.db.query(sql))
        return [r for r in rows if source is None or r["source"] == source]

    def queue(self) -> dict[int, float]:
        return dict(self.db.execute("SELECT image_id, priority FROM queue").fetchall())

    def majority(self, ids: list[int]) -> tuple[str, list[int]]:
        """The most common true class on a grid and the images of other classes."""
        labels = [self.truth[i] for i in ids]
        top = max(set(labels), key=lambda c: (labels.count(c), c))
        return top, [i for i in ids if self.truth[i] != top]


@pytest.fixture
def site(project, digits):
    made = Site(project, digits)
    yield made
    made.db.conn.close()


@pytest.fixture
def clustered(site):
    site.clustering_id = cluster_now(site.project, k=6)
    return site


# --- the maths ------------------------------------------------------------------------------


def test_clusters_group_the_digits_by_their_pixels(digits):
    points = clusters.prepare(digits.data[:600], seed=0)
    found = clusters.cluster(points, None, classes=10, seed=0)
    truth = digits.target[:600]
    assert found.method == "ward"
    assert found.suggested_k in found.silhouettes and found.k == found.suggested_k
    assert min(found.silhouettes) >= 10  # the suggestion starts at the number of classes
    assert clusters.purity(found.labels, truth) > 0.85  # chance is about 0.2
    shuffled = np.random.default_rng(0).permutation(truth)
    assert clusters.purity(found.labels, shuffled) < 0.4
    for c in range(found.k):
        members = np.flatnonzero(found.labels == c)
        # Positions 0..n-1, nearest the centre first: the odd ones out come last.
        assert sorted(found.positions[members]) == list(range(len(members)))
        by_position = members[np.argsort(found.positions[members])]
        assert list(found.distances[by_position]) == sorted(found.distances[members])
    # Tightest first, small clusters last.
    spreads = [found.distances[found.labels == c].mean() for c in range(found.k)
               if np.sum(found.labels == c) >= clusters.SMALL]
    assert spreads == sorted(spreads)


def test_an_explicit_k_and_minibatch_kmeans_past_the_ward_limit(digits, monkeypatch):
    points = clusters.prepare(digits.data[:400], seed=0)
    monkeypatch.setattr(clusters, "WARD_LIMIT", 100)
    found = clusters.cluster(points, 25, classes=10, seed=0)
    assert found.method == "minibatch-kmeans" and found.k == 25
    assert clusters.purity(found.labels, digits.target[:400]) > 0.75
    assert clusters.cluster(points[:3], 50, classes=10).k <= 3  # k is capped at the images
    with pytest.raises(ValueError, match="at least 2 images"):
        clusters.cluster(points[:1], 2, classes=10)


# --- the job, with the real backbone ---------------------------------------------------------


def test_the_clustering_job_groups_real_digits_on_real_embeddings(tmp_path, digits):
    write_digits(tmp_path / "images", digits, 160)
    project, _ = init_project(tmp_path / "project", tmp_path / "images", CLASSES, seed=7,
                              qa_fraction=0.0)
    project = configure(project, loader_workers=0, batch_size=32)  # input_size 64: the demo's
    clustering_id = cluster_now(project, k=20, real=True)
    db = store.connect(project.db_path)
    try:
        row = job_rows.get(db, "clusterings", clustering_id)
        assert row["status"] == "done" and row["clusters"] == 20 and row["method"] == "ward"
        assert row["pool_size"] == 160 and row["suggested_k"] >= 10 and row["progress"] == 1
        members = list(db.query("SELECT * FROM cluster_members WHERE clustering_id = ?",
                                [clustering_id]))
        truth = truth_of(db, digits)
    finally:
        db.conn.close()
    assert len(members) == 160
    labels = np.array([m["cluster"] for m in members])
    classes = np.array([int(truth[m["image_id"]]) for m in members])
    purity = clusters.purity(labels, classes)
    baseline = clusters.purity(labels, np.random.default_rng(0).permutation(classes))
    assert purity > 0.6 and purity > baseline + 0.2, (purity, baseline)
    # The first page of every cluster is already rendered as thumbnails.
    for m in members:
        if m["position"] < PAGE:
            assert copy_path(project.cache_dir, "thumb", m["image_id"]).is_file()


def test_a_clustering_runs_once_and_fails_cleanly(site):
    first, created = job_rows.queue(site.db, "clusterings", None, k=None)
    again, created_again = job_rows.queue(site.db, "clusterings", None, k=4)
    assert created and not created_again and again == first
    run_clustering(site.project, first, PixelLearner())
    with pytest.raises(store.StoreError, match="not queued"):
        run_clustering(site.project, first, PixelLearner())
    # Everything labeled: nothing to cluster, the reason on the row, the old one serving.
    for image_id in site.truth:
        store.add_vote(site.db, site.user("bob"), image_id, "label", site.classes["0"])
    failing, _ = job_rows.queue(site.db, "clusterings", None, k=None)
    with pytest.raises(Exception, match="nothing to cluster"):
        run_clustering(site.project, failing, PixelLearner())
    row = job_rows.get(site.db, "clusterings", failing)
    assert row["status"] == "failed" and "fewer than two images" in row["error"]
    assert clusterings.current_clustering(site.db)["id"] == first


# --- the cluster bootstrap in the app ----------------------------------------------------------


def test_confirming_a_cluster_page_votes_for_all_but_the_odd_ones_out(clustered):
    site = clustered
    html = site.get("ann", "/bootstrap/", htmx=False).get_data(as_text=True)
    assert 'id="grid-card"' in html and "grid.js" in html
    clustering_id, cluster = cluster_of(html)
    shown = grid_ids(html)
    assert 0 < len(shown) <= PAGE
    assert len(re.findall(r'size=thumb', html)) == len(shown)  # thumbnails
    # The first three rows load at once, the rest lazily.
    assert html.count('loading="lazy"') == max(0, len(shown) - 27)
    top, odd = site.majority(shown)
    response = site.post("ann", f"/bootstrap/{clustering_id}/{cluster}", {
        "class_id": site.classes[top], "shown": shown, "wrong": odd, "elapsed_ms": "6000",
    })
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_data(as_text=True)
    assert f"Labeled {len(shown) - len(odd)} as “{top}”" in answer
    votes = site.votes("cluster")
    assert sorted(v["image_id"] for v in votes) == sorted(set(shown) - set(odd))
    assert {v["class_id"] for v in votes} == {site.classes[top]}
    assert {v["user_id"] for v in votes} == {site.user("ann")}
    # The page's time, spread over its votes.
    assert sum(v["seconds"] for v in votes) == pytest.approx(6.0, abs=0.01)
    # One vote is enough here: the images are agreed and out of the queue; the odd ones
    # out have no vote and lead the queue.
    queue = site.queue()
    for image_id in set(shown) - set(odd):
        assert store.state_of(site.db, image_id)["status"] == "agreed"
        assert image_id not in queue
    if odd:
        assert sorted(queue, key=queue.get)[:len(odd)] == odd
        bob_card = site.get("bob", "/label").get_data(as_text=True)
        assert card_images(bob_card)[0] == odd[0]
    # The next card does not show this page again.
    assert not set(grid_ids(answer)) & set(shown)


def test_pages_of_one_cluster_follow_each_other_and_keep_the_class(site, digits):
    """A big cluster is labeled page by page; the class picked stays picked."""
    clustering_id = cluster_now(site.project, k=1)
    html = site.get("ann", "/bootstrap/").get_data(as_text=True)
    assert cluster_of(html) == (clustering_id, 0)
    from server.web import bulk as web_bulk

    first = grid_ids(html)
    assert len(first) == min(40, web_bulk.PAGE)
    assert html.count('loading="lazy"') == len(first) - 27
    answer = site.post("ann", f"/bootstrap/{clustering_id}/0", {
        "class_id": site.classes["3"], "shown": first[:10]}).get_data(as_text=True)
    # Ten labeled: the page resumes after the last one labeled, with '3' picked.
    rest = grid_ids(answer)
    assert cluster_of(answer) == (clustering_id, 0) and rest == first[10:]
    assert re.search(rf'value="{site.classes["3"]}" data-key="3" checked', answer)


def test_mixed_leaves_the_cluster_alone_and_undo_takes_a_page_back(clustered):
    site = clustered
    html = site.get("ann", "/bootstrap/").get_data(as_text=True)
    clustering_id, cluster = cluster_of(html)
    answer = site.post("ann", f"/bootstrap/{clustering_id}/{cluster}",
                       {"decision": "mixed"}).get_data(as_text=True)
    assert f"Cluster {cluster + 1} is left alone (mixed)" in answer
    assert site.votes() == []
    following = cluster_of(answer)[1]
    assert following != cluster
    overview = site.get("ann", "/bootstrap/clusters", htmx=False).get_data(as_text=True)
    assert re.search(rf">{cluster + 1}</a></td>.*?<td>mixed</td>", overview)
    # Another annotator still gets the cluster ann left alone.
    assert cluster_of(site.get("bob", "/bootstrap/").get_data(as_text=True))[1] == cluster
    store.release_leases(site.db, site.user("bob"))  # bob logs out

    shown = grid_ids(answer)
    site.post("ann", f"/bootstrap/{clustering_id}/{following}",
              {"class_id": site.classes["5"], "shown": shown})
    assert len(site.votes("cluster")) == len(shown)
    undone = site.post("ann", "/bootstrap/undo", {}).get_data(as_text=True)
    assert f"Undid the {len(shown)} labels." in undone
    assert site.votes() == [] and set(shown) <= set(site.queue())
    assert cluster_of(undone)[1] == following and sorted(grid_ids(undone)) == sorted(shown)
    # Undo again: the mixed mark goes, and that cluster comes back first.
    undone = site.post("ann", "/bootstrap/undo", {}).get_data(as_text=True)
    assert "Undid the mixed mark." in undone and cluster_of(undone)[1] == cluster
    nothing = site.post("ann", "/bootstrap/undo", {})
    assert nothing.status_code == 400 and "Nothing to undo" in nothing.get_data(as_text=True)


def test_cluster_votes_count_like_any_other_vote_for_consensus(project, digits):
    site = Site(configure(project, votes_per_image=2), digits)
    try:
        store.set_rules(site.db, store.Rules(votes_per_image=2, qa_fraction=0.0))
        with site.db.conn:
            site.db.execute("UPDATE images SET votes_needed = 2")
        clustering_id = cluster_now(site.project, k=4)
        html = site.get("ann", "/bootstrap/").get_data(as_text=True)
        _, cluster = cluster_of(html)
        shown = grid_ids(html)
        top, odd = site.majority(shown)
        site.post("ann", f"/bootstrap/{clustering_id}/{cluster}",
                  {"class_id": site.classes[top], "shown": shown, "wrong": odd})
        voted = [i for i in shown if i not in odd]
        assert {store.state_of(site.db, i)["status"] for i in voted} == {"needs_votes"}
        # Bob agrees on one image one by one, and disagrees on another.
        store.add_vote(site.db, site.user("bob"), voted[0], "label", site.classes[top])
        other = next(c for c in CLASSES if c != top)
        store.add_vote(site.db, site.user("bob"), voted[1], "label", site.classes[other])
        assert store.state_of(site.db, voted[0])["status"] == "agreed"
        assert store.state_of(site.db, voted[1])["status"] == "disputed"
        # Bob sees the same cluster (his vote is still wanted), less what he answered.
        bob = site.get("bob", f"/bootstrap/{clustering_id}/{cluster}").get_data(as_text=True)
        assert set(grid_ids(bob)) == set(shown) - {voted[0], voted[1]}
    finally:
        site.db.conn.close()


def test_two_annotators_bootstrapping_at_once_get_different_images(clustered):
    site = clustered
    ann = grid_ids(site.get("ann", "/bootstrap/").get_data(as_text=True))
    bob = grid_ids(site.get("bob", "/bootstrap/").get_data(as_text=True))
    assert ann and bob and not set(ann) & set(bob)  # the grid shown is leased


def test_cluster_errors_are_clear_and_save_nothing(clustered):
    site = clustered
    html = site.get("ann", "/bootstrap/").get_data(as_text=True)
    clustering_id, cluster = cluster_of(html)
    shown = grid_ids(html)
    url = f"/bootstrap/{clustering_id}/{cluster}"
    stranger = site.db.execute(
        "SELECT image_id FROM cluster_members WHERE clustering_id = ? AND cluster != ?",
        [clustering_id, cluster]).fetchone()[0]
    cases = [
        ({"shown": shown}, 400, "Pick the class first"),
        ({"shown": shown, "class_id": "999"}, 400, "Unknown class id 999"),
        ({"shown": shown, "class_id": "x"}, 400, "malformed class id"),
        ({"class_id": site.classes["1"]}, 400, "named no images"),
        ({"shown": ["1x"], "class_id": site.classes["1"]}, 400, "malformed image id"),
        ({"shown": shown + [stranger], "class_id": site.classes["1"]}, 400,
         f"image {stranger} is not in cluster {cluster}"),
        ({"shown": shown[:2], "wrong": shown[3:4], "class_id": site.classes["1"]}, 400,
         "was toggled but is not in the grid"),
        ({"shown": shown[:1] * 2, "class_id": site.classes["1"]}, 400, "appears twice"),
        ({"shown": shown, "decision": "maybe"}, 400, "Unknown decision"),
    ]
    for data, status, text in cases:
        response = site.post("ann", url, data)
        assert response.status_code == status, (data, response.get_data(as_text=True))
        assert text in response.get_data(as_text=True), data
        assert response.mimetype == "text/plain"
    assert site.post("ann", f"/bootstrap/{clustering_id}/999",
                     {"shown": shown, "class_id": site.classes["1"]}).status_code == 400
    assert site.get("ann", f"/bootstrap/{clustering_id}/999").status_code == 404
    assert site.votes() == []
    # A new clustering replaces this one: the old page is stale.
    newer = cluster_now(site.project, k=3)
    stale = site.post("ann", url, {"shown": shown, "class_id": site.classes["1"]})
    assert stale.status_code == 409
    assert (f"clustering {clustering_id} has been replaced by clustering {newer}"
            in stale.get_data(as_text=True))
    assert site.post("ann", url, {"decision": "mixed"}).status_code == 409
    assert site.get("ann", url).status_code == 404
    assert site.votes() == []


def test_images_answered_meanwhile_are_passed_and_reported(clustered):
    site = clustered
    html = site.get("ann", "/bootstrap/").get_data(as_text=True)
    clustering_id, cluster = cluster_of(html)
    shown = grid_ids(html)
    store.add_vote(site.db, site.user("ann"), shown[0], "skip")  # ann, in another tab
    store.add_vote(site.db, site.user("bob"), shown[1], "label", site.classes["2"])
    answer = site.post("ann", f"/bootstrap/{clustering_id}/{cluster}",
                       {"shown": shown, "class_id": site.classes["1"]}).get_data(as_text=True)
    assert f"Labeled {len(shown) - 2} as “1”" in answer
    assert "2 were already answered" in answer
    assert {v["image_id"] for v in site.votes("cluster")} == set(shown[2:])


def test_the_admin_starts_a_clustering_and_its_status_polls_until_done(site):
    page = site.get("admin", "/bootstrap/", htmx=False).get_data(as_text=True)
    assert "No clustering yet" in page and 'name="k"' in page
    status = site.post("admin", "/bootstrap/run", {"k": "5"}).get_data(as_text=True)
    row = job_rows.active(site.db, "clusterings")
    assert row["status"] == "queued" and row["k"] == 5
    assert f'hx-get="/bootstrap/status?watching={row["id"]}"' in status
    assert site.post("admin", "/bootstrap/run", {"k": "0"}).status_code == 400
    assert site.post("admin", "/bootstrap/run", {"k": "many"}).status_code == 400
    # An annotator sees that there is nothing to label by cluster yet.
    assert "No clustering yet" in site.get("ann", "/bootstrap/").get_data(as_text=True)
    run_clustering(site.project, row["id"], PixelLearner())  # what the worker does
    response = site.get("admin", f"/bootstrap/status?watching={row['id']}")
    assert response.headers.get("HX-Refresh") == "true"
    text = response.get_data(as_text=True)
    assert f"Clustering {row['id']}: 5 clusters of 40 images (ward)" in text
    assert "hx-get" not in text
    assert cluster_of(site.get("ann", "/bootstrap/").get_data(as_text=True))[0] == row["id"]


# --- grid verify ---------------------------------------------------------------------------------


def publish_predictions(site: Site, predicted: dict[int, tuple[str, float]]) -> int:
    """A finished round predicting {image id: (class name, confidence)}, through the store."""
    round_id = job_rows.queue(site.db, "rounds", None, strategy="margin")[0]
    job_rows.start(site.db, "rounds", round_id, "round")
    ids = np.array(sorted(predicted))
    round_store.publish_round(
        site.db, round_id, ids, np.array([site.classes[predicted[i][0]] for i in ids]),
        np.array([predicted[i][1] for i in ids]), np.zeros(len(ids)), np.arange(len(ids)),
        {"labels_used": 0},
    )
    return round_id


@pytest.fixture
def predicted(site):
    """A round predicting each image's true class, except every fifth (predicted '0'), with
    confidences that fall with the image id."""
    ids = sorted(site.truth)
    guesses = {i: (site.truth[i] if n % 5 else "0", 0.99 - n * 0.01) for n, i in enumerate(ids)}
    site.round_id = publish_predictions(site, guesses)
    site.guesses = guesses
    return site


def test_grid_verify_accepts_a_page_and_sends_the_toggled_back_to_the_queue(predicted):
    site = predicted
    zero = site.classes["0"]
    expected = sorted((i for i, (c, _) in site.guesses.items() if c == "0"),
                      key=lambda i: -site.guesses[i][1])
    html = site.get("ann", f"/verify/?class={zero}", htmx=False).get_data(as_text=True)
    assert "grid.js" in html and 'data-key="Enter"' in html
    assert grid_ids(html) == expected  # most confident first
    wrong = [i for i in expected if site.truth[i] != "0"]
    answer = site.post("ann", "/verify/", {
        "class_id": zero, "round_id": site.round_id, "shown": expected, "wrong": wrong,
        "order": "confident", "elapsed_ms": "3000",
    }).get_data(as_text=True)
    assert f"Labeled {len(expected) - len(wrong)} as “0”" in answer
    assert f"{len(wrong)} went back to the queue" in answer
    votes = site.votes("grid")
    assert sorted(v["image_id"] for v in votes) == sorted(set(expected) - set(wrong))
    assert {v["class_id"] for v in votes} == {zero}
    # The toggled ones: no vote, first in the one-by-one queue, not on ann's grid again.
    queue = site.queue()
    assert sorted(queue, key=queue.get)[:len(wrong)] == wrong
    assert not set(grid_ids(answer)) & set(expected)
    assert card_images(site.get("bob", "/label").get_data(as_text=True))[0] == wrong[0]
    # Undo takes the page back.
    undone = site.post("ann", "/verify/undo", {"order": "confident"}).get_data(as_text=True)
    assert f"Undid {len(expected) - len(wrong)} labels." in undone
    assert site.votes() == []


def test_the_default_class_the_order_toggle_and_the_class_counts(predicted):
    site = predicted
    html = site.get("ann", "/verify/").get_data(as_text=True)
    counts, confidences = {}, {}
    for guess, confidence in site.guesses.values():
        counts[guess] = counts.get(guess, 0) + 1
        confidences.setdefault(guess, []).append(confidence)
    # The default: the class whose first page the model is surest of (fewest toggles).
    top = max(confidences, key=lambda c: sum(confidences[c]) / len(confidences[c]))
    assert re.search(r'class="chosen"[^>]*aria-current="true"><kbd>(\w)</kbd>(\w+)', html)\
        .group(2) == top
    for name, count in counts.items():
        assert re.search(rf"<kbd>{name}</kbd>{name} <span class=\"n\">{count}</span>", html)
    seven = site.classes["7"]
    confident = grid_ids(site.get("ann", f"/verify/?class={seven}").get_data(as_text=True))
    uncertain = site.get("ann", f"/verify/?class={seven}&order=uncertain").get_data(as_text=True)
    assert grid_ids(uncertain) == confident[::-1]
    assert "most uncertain first" in uncertain
    assert site.get("ann", "/verify/?order=sideways").status_code == 400
    assert site.get("ann", "/verify/?class=999").status_code == 404


def test_grid_verify_errors_are_clear_and_save_nothing(predicted):
    site = predicted
    seven, zero = site.classes["7"], site.classes["0"]
    shown = grid_ids(site.get("ann", f"/verify/?class={seven}").get_data(as_text=True))
    base = {"class_id": seven, "round_id": site.round_id, "shown": shown}
    zeros = [i for i, (c, _) in site.guesses.items() if c == "0"]
    cases = [
        ({**base, "class_id": "999"}, 400, "Unknown class id"),
        ({**base, "round_id": ""}, 400, "malformed round id"),
        ({**base, "round_id": "999"}, 400, "no round 999"),
        ({**base, "shown": shown + zeros[:1]}, 400, f"does not predict image {zeros[0]}"),
        ({**base, "class_id": zero}, 400, "does not predict image"),
        ({**base, "order": "sideways"}, 400, "Unknown order"),
    ]
    for data, status, text in cases:
        response = site.post("ann", "/verify/", data)
        assert response.status_code == status, data
        assert text in response.get_data(as_text=True), (data, response.get_data(as_text=True))
    newer = publish_predictions(site, site.guesses)
    stale = site.post("ann", "/verify/", base)
    assert stale.status_code == 409
    assert (f"round {site.round_id}'s predictions have been replaced by round {newer}'s"
            in stale.get_data(as_text=True))
    assert site.votes() == []


def test_verify_before_any_round_says_what_to_do(site):
    html = site.get("ann", "/verify/").get_data(as_text=True)
    assert "Grid verify needs a finished round" in html and grid_ids(html) == []


def test_the_web_process_never_imports_torch_for_the_grids(clustered):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from conftest import login
        from server.app import create_app

        app = create_app({str(clustered.project.root)!r}, {{"TESTING": True}})
        admin = app.test_client()
        login(admin, "admin")
        for path in ("/bootstrap/", "/bootstrap/clusters", "/bootstrap/status", "/verify/"):
            assert admin.get(path).status_code == 200, path
        print(sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_reviewer_may_use_the_grids_too(clustered):
    add_user(clustered.project, "rita", "reviewer", "rita-password-long")
    client = clustered.app.test_client()
    login(client, "rita", "rita-password-long")
    assert client.get("/bootstrap/").status_code == 200
    assert client.get("/verify/").status_code == 200


def test_a_wrong_prediction_stays_off_that_class_in_later_rounds(predicted):
    site = predicted
    zero = site.classes["0"]
    shown = grid_ids(site.get("ann", f"/verify/?class={zero}").get_data(as_text=True))
    wrong = [i for i in shown if site.truth[i] != "0"]
    assert wrong
    site.post("ann", "/verify/", {"class_id": zero, "round_id": site.round_id,
                                  "shown": shown, "wrong": wrong})
    # A new round that has learned nothing about them predicts them '0' again: ann said
    # they are not, so her grid leaves them out; bob's (his own vote) still shows them.
    publish_predictions(site, site.guesses)
    assert not set(grid_ids(site.get("ann", f"/verify/?class={zero}").get_data(as_text=True))) \
        & set(wrong)
    assert set(wrong) <= set(grid_ids(
        site.get("bob", f"/verify/?class={zero}").get_data(as_text=True)))


def test_the_next_card_is_another_cluster_unless_one_was_opened_from_the_list(site):
    """First pages of every cluster before any second page; a cluster opened from the list
    of clusters keeps its card until it is done."""
    clustering_id = cluster_now(site.project, k=3)
    html = site.get("ann", "/bootstrap/").get_data(as_text=True)
    _, first = cluster_of(html)
    shown = grid_ids(html)
    answer = site.post("ann", f"/bootstrap/{clustering_id}/{first}",
                       {"class_id": site.classes["1"], "shown": shown[:3]})
    assert cluster_of(answer.get_data(as_text=True))[1] != first  # breadth first
    overview = site.get("ann", "/bootstrap/clusters", htmx=False).get_data(as_text=True)
    assert f'href="/bootstrap/{clustering_id}/{first}"' in overview
    pinned = site.get("ann", f"/bootstrap/{clustering_id}/{first}").get_data(as_text=True)
    assert 'name="pinned" value="1"' in pinned and grid_ids(pinned) == shown[3:]
    answer = site.post("ann", f"/bootstrap/{clustering_id}/{first}", {
        "class_id": site.classes["1"], "shown": shown[3:6], "pinned": "1"}
    ).get_data(as_text=True)
    assert cluster_of(answer) == (clustering_id, first) and grid_ids(answer) == shown[6:]


def test_a_grid_naming_images_not_handed_to_the_voter_is_refused_whole(clustered):
    """A forged page: images on bob's grid (the single vote each needs is his) posted by ann
    are a 409 with nothing written, on the cluster bootstrap and on grid verify alike."""
    site = clustered
    html = site.get("bob", "/bootstrap/").get_data(as_text=True)
    clustering_id, cluster = cluster_of(html)
    bobs = grid_ids(html)
    site.as_user("ann")
    forged = site.post("ann", f"/bootstrap/{clustering_id}/{cluster}",
                       {"shown": bobs, "class_id": site.classes["1"]})
    assert forged.status_code == 409, forged.get_data(as_text=True)
    assert "not handed to you" in forged.get_data(as_text=True)
    assert site.votes() == []
    # The same rule on grid verify, whatever the cluster held.
    round_id = publish_predictions(site, {i: ("4", 0.9) for i in site.truth})
    mine = grid_ids(site.get("ann", f"/verify/?class={site.classes['4']}").get_data(
        as_text=True))
    bob_grid = grid_ids(site.get("bob", f"/verify/?class={site.classes['4']}").get_data(
        as_text=True))
    assert mine and bob_grid and not set(mine) & set(bob_grid)
    forged = site.post("ann", "/verify/", {"class_id": site.classes["4"], "round_id": round_id,
                                           "shown": mine + bob_grid[:1]})
    assert forged.status_code == 409, forged.get_data(as_text=True)
    assert site.votes() == []
    fair = site.post("ann", "/verify/", {"class_id": site.classes["4"], "round_id": round_id,
                                         "shown": mine})
    assert fair.status_code == 200
    assert sorted(v["image_id"] for v in site.votes("grid")) == sorted(mine)
