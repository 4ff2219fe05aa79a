"""The quality checks through the product, on real digit images: a quality run as the worker
runs it, the admin's page (suspects, send to review, duplicate groups with keep/drop, the
sample-size prediction, class balance), `activelabel audit`, and an export that never
splits a duplicate group."""

from __future__ import annotations

import csv
import io
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, PASSWORDS, htmx_headers, login, write_digits
from PIL import Image

from server import store
from server.app import create_app
from server.cli.main import main
from server.jobs.quality import run_quality
from server.projects import add_user, init_project, open_db
from server.store import job_rows

COUNT = 160
FLIPS = 12


@pytest.fixture(scope="module")
def audited(tmp_path_factory, digits):
    """160 digits plus two near-copies (one shifted a pixel, one 10 % darker), 150 labels of
    which 12 are wrong on purpose, and one finished quality run."""
    folder = tmp_path_factory.mktemp("quality")
    truth = write_digits(folder / "images", digits, COUNT)
    originals = sorted(truth)
    for source, name, change in ((originals[3], "copy-shift.png", "shift"),
                                 (originals[7], "copy-bright.png", "bright")):
        pixels = np.asarray(Image.open(source).convert("L"), dtype=np.float32)
        pixels = np.roll(pixels, 1, axis=1) if change == "shift" else pixels * 0.9
        Image.fromarray(pixels.astype(np.uint8)).save(folder / "images" / name)
    project, _ = init_project(folder / "project", folder / "images", CLASSES, seed=5,
                              qa_fraction=0.0, loader_workers=0)
    for name, role in (("admin", "admin"), ("ann", "annotator")):
        add_user(project, name, role, PASSWORDS[name])
    db = open_db(project)
    classes = {c["name"]: c["id"] for c in store.classes(db)}
    ann = store.get_user_by_name(db, "ann")["id"]
    rows = list(db.query("SELECT id, path FROM images WHERE path LIKE '%digit-%' ORDER BY id"))
    rng = random.Random(3)
    flipped = set(rng.sample([r["id"] for r in rows[:150]], FLIPS))
    for row in rows[:150]:
        label = truth[row["path"]]
        if row["id"] in flipped:
            label = str((int(label) + rng.randint(1, 9)) % 10)
        store.add_vote(db, ann, row["id"], "label", classes[label])
    run_id, _ = job_rows.queue(db, "quality_runs", None)
    db.conn.close()
    result = run_quality(project, run_id)
    paths = {r["id"]: r["path"] for r in rows}
    return project, result, flipped, paths


def test_flipped_labels_rank_first_and_copies_are_grouped(audited):
    project, result, flipped, _ = audited
    suspects = result["suspects"]
    assert suspects["count"] == 150
    top = [row["image_id"] for row in suspects["rows"][:FLIPS]]
    # Two thirds of the wrong labels are among the first 12 of 150.
    assert len(flipped.intersection(top)) >= 8, (top, flipped)
    db = open_db(project)
    try:
        names = dict(db.execute("SELECT id, rel_path FROM images").fetchall())
    finally:
        db.conn.close()
    groups = [{names[i] for i in group} for group in result["duplicates"]["groups"]]
    assert {"copy-shift.png", Path(sorted(names.values())[3]).name} in groups or any(
        "copy-shift.png" in g for g in groups)
    assert any("copy-bright.png" in g for g in groups)
    assert all(len(g) == 2 for g in groups)  # distinct digits are never grouped
    assert "params" in result["curve"] and result["curve"]["labels"] == 150


def test_the_page_shows_suspects_and_one_key_sends_one_to_review(audited):
    project, result, flipped, _ = audited
    client = create_app(project.root, {"TESTING": True}).test_client()
    token = login(client, "admin")
    page = client.get("/admin/quality/?target=90").get_data(as_text=True)
    first = result["suspects"]["rows"][0]["image_id"]
    assert f'data-image-id="{first}"' in page
    assert 'data-key="r"' in page and "send to review" in page
    assert re.search(r"For 90\.0%:\s+(about <strong>[\d,]+</strong> labels|<strong>not reachable)",
                     page)
    assert 'src="/admin/quality/curve.png"' in page
    png = client.get("/admin/quality/curve.png")
    assert png.mimetype == "image/png" and png.get_data()[:4] == b"\x89PNG"
    assert "Class balance" in page

    sent = client.post(f"/review/{first}/request", headers=htmx_headers(token))
    assert sent.status_code == 200 and "Sent to review" in sent.get_data(as_text=True)
    db = open_db(project)
    try:
        assert store.state_of(db, first)["status"] == "disputed"
        assert first in store.review_queue(db, limit=200)
        # The reviewer's answer closes it; the page now says where it stands.
        store.adjudicate(db, store.get_user_by_name(db, "admin")["id"], first,
                         store.state_of(db, first)["class_id"])
    finally:
        db.conn.close()
    bad = client.get("/admin/quality/?target=abc")
    assert bad.status_code == 400 and "not a number" in bad.get_data(as_text=True)


def test_export_keeps_duplicate_groups_together_and_can_drop_copies(audited, tmp_path):
    project, result, _, _ = audited
    db = open_db(project)
    try:
        ann = store.get_user_by_name(db, "ann")["id"]
        classes = {c["id"]: c for c in store.classes(db)}
        # Label the copies like their originals, so both sides of each group are exported.
        for group in result["duplicates"]["groups"]:
            labeled = [i for i in group if (store.state_of(db, i) or {}).get("class_id")]
            for image_id in group:
                if image_id not in labeled and labeled:
                    store.add_vote(db, ann, image_id, "label",
                                   store.state_of(db, labeled[0])["class_id"])
    finally:
        db.conn.close()
    assert classes
    client = create_app(project.root, {"TESTING": True}).test_client()
    token = login(client, "admin")
    groups = result["duplicates"]["groups"]
    for seed in range(6):  # whatever the split's seed, a group stays in one part
        rows = list(csv.DictReader(io.StringIO(
            client.get(f"/export?format=csv&seed={seed}").get_data(as_text=True))))
        split_of = {int(Path(r["file"]).name.split("-")[0]): r["split"] for r in rows}
        for group in groups:
            assert len({split_of[i] for i in group if i in split_of}) == 1
    # Drop: with no decision the first of each group stays; the admin's 'keep' wins.
    group = sorted(groups[0])
    client.post(f"/admin/quality/duplicates/{group[0]}", data={"keep": "0"},
                headers=htmx_headers(token))
    client.post(f"/admin/quality/duplicates/{group[1]}", data={"keep": "1"},
                headers=htmx_headers(token))
    with client.get("/export?format=imagefolder&drop_duplicates=1") as response:
        names = zipfile.ZipFile(io.BytesIO(response.get_data())).namelist()
    ids = {int(Path(n).name.split("-")[0]) for n in names if "/" in n}
    assert group[1] in ids and group[0] not in ids
    for other in groups[1:]:
        assert len(ids.intersection(other)) == 1
    everything = client.get("/export?format=csv").get_data(as_text=True)
    assert len(everything.splitlines()) - 1 == len(ids) + len(groups)  # nothing else lost


def test_audit_command_writes_the_suspects_csv(audited, runner, tmp_path):
    project, _, flipped, paths = audited
    out = tmp_path / "suspects.csv"
    result = runner.invoke(main, ["audit", str(project.root), "--out", str(out),
                                  "--target", "99"])
    assert result.exit_code == 0, result.output
    assert "consensus labels ranked" in result.output
    assert "near-duplicate groups" in result.output
    assert "For 99.0%:" in result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    top = {int(r["image_id"]) for r in rows[:FLIPS]}
    assert len(flipped & top) >= 8
    # Every labeled image, originals and the copies labeled since, once each.
    assert len({r["image_id"] for r in rows}) == len(rows)
    assert {r["path"] for r in rows} <= set(paths.values()) | {
        str(p) for p in (project.root.parent / "images").glob("copy-*")}
