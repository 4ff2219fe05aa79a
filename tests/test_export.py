"""Export through the web: GET /export streams a zip (imagefolder), CSV or JSONL of the
labeled images, split per class, reproducibly for a seed."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
import stat
import zipfile
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import PASSWORDS, card_images, htmx_headers, login, write_digits

from server import store
from server.app import create_app
from server.dataset import exporter
from server.dataset.demo import digit_image
from server.projects import add_user, init_project

ENTRY = re.compile(r"^(train|val|test)/([^/]+)/(\d+)-(.+)$")


# ---------------------------------------------------------------- helpers


def class_ids(project) -> dict[str, int]:
    db = store.connect(project.db_path)
    try:
        return {c["name"]: c["id"] for c in store.classes(db)}
    finally:
        db.conn.close()


def image_path(project, image_id: int) -> Path:
    db = store.connect(project.db_path)
    try:
        return Path(store.get_image(db, image_id)["path"])
    finally:
        db.conn.close()


def true_label(project, digits, image_id: int) -> str:
    """The conftest images are named digit-<index>.png: the index gives the true digit."""
    index = int(image_path(project, image_id).stem.split("-")[1])
    return str(int(digits.target[index]))


def answer(client, token, image_id: int, choice: str) -> str:
    response = client.post(
        f"/label/{image_id}", data={"choice": choice}, headers=htmx_headers(token)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def label_through_web(client, token, project, digits, count: int) -> dict[int, str]:
    """Label the next `count` images on the card, each with its true digit, as a careful
    annotator would. Returns {image id: label given}."""
    ids = class_ids(project)
    given: dict[int, str] = {}
    page = client.get("/label").get_data(as_text=True)
    for _ in range(count):
        image_id = card_images(page)[0]
        given[image_id] = true_label(project, digits, image_id)
        page = answer(client, token, image_id, str(ids[given[image_id]]))
    return given


def export(client, **params):
    response = client.get("/export", query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response


def open_zip(response) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert archive.testzip() is None  # every entry's CRC checks out
    return archive


def image_entries(archive: zipfile.ZipFile) -> list[re.Match]:
    return [m for m in map(ENTRY.match, archive.namelist()) if m]


def csv_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def expected_counts(n: int, split: str) -> list[int]:
    """The documented rule, restated: floor(n * part) each, then the images left over one
    each to the largest remainders, ties to the earlier part."""
    parts = [Fraction(p) for p in split.split(",")]
    exact = [n * p for p in parts]
    counts = [int(e) for e in exact]
    ranked = sorted(range(len(parts)), key=lambda i: (counts[i] - exact[i], i))
    for i in ranked[: n - sum(counts)]:
        counts[i] += 1
    return counts


@pytest.fixture
def admin_client(app):
    client = app.test_client()
    login(client, "admin")
    return client


@pytest.fixture
def sorted_project(tmp_path, digits):
    """300 real digits imported from a folder-per-class layout: all labeled by the import."""
    folder = tmp_path / "sorted"
    truth = write_digits(folder, digits, 300, per_class=True)
    project, report = init_project(tmp_path / "sorted-project", folder, seed=11)
    assert report.labeled == 300
    add_user(project, "admin", "admin", PASSWORDS["admin"])
    return project, truth


@pytest.fixture
def sorted_admin(sorted_project):
    project, _truth = sorted_project
    client = create_app(project.root, {"TESTING": True}).test_client()
    login(client, "admin")
    return client


# ---------------------------------------------------------------- web labels -> zip


def test_zip_holds_every_web_label_with_the_original_bytes(
    project, as_user, admin_client, digits
):
    ann, ann_token = as_user("ann")
    bob, bob_token = as_user("bob")
    given = label_through_web(ann, ann_token, project, digits, 12)
    given |= label_through_web(bob, bob_token, project, digits, 8)
    assert len(given) == 20  # two annotators are never handed the same image

    response = export(admin_client, format="imagefolder", split="0.8,0.1,0.1", seed=1)
    assert response.mimetype == "application/zip"
    assert re.fullmatch(
        r'attachment; filename="project-\d{8}-\d{6}\.zip"', response.headers["Content-Disposition"]
    )
    archive = open_zip(response)
    entries = image_entries(archive)
    assert Counter(m[2] for m in entries) == Counter(given.values())
    assert {int(m[3]): m[2] for m in entries} == given
    for match in entries:
        original = image_path(project, int(match[3]))
        assert match[4] == original.name
        assert archive.read(match[0]) == original.read_bytes()

    listed = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode("utf-8"))))
    assert sorted(r["file"] for r in listed) == sorted(m[0] for m in entries)
    for row in listed:
        assert row["sha256"] == hashlib.sha256(archive.read(row["file"])).hexdigest()
        assert row["sha256"] == sha256_of(row["path"])
        assert row["label"] == row["file"].split("/")[1]
        assert row["split"] == row["file"].split("/")[0]
        assert row["votes"] == "1"
    assert "MISSING.txt" not in archive.namelist()


def test_the_zip_is_streamed_entry_by_entry(project, as_user, admin_client, digits):
    ann, token = as_user("ann")
    label_through_web(ann, token, project, digits, 5)
    response = admin_client.get("/export?format=imagefolder", buffered=False)
    assert response.status_code == 200
    assert response.is_streamed
    chunks = [chunk for chunk in response.response if chunk]
    response.close()
    # One chunk per image at least, then labels.csv and the central directory.
    assert len(chunks) > 5
    assert len(image_entries(zipfile.ZipFile(io.BytesIO(b"".join(chunks))))) == 5


def test_csv_and_jsonl_rows_carry_path_hash_label_split_and_votes(
    project, as_user, admin_client, digits
):
    ann, token = as_user("ann")
    given = label_through_web(ann, token, project, digits, 10)
    paths = {str(image_path(project, i)): label for i, label in given.items()}

    as_csv = export(admin_client, format="csv", seed=5)
    assert as_csv.mimetype == "text/csv"
    assert as_csv.get_data(as_text=True).splitlines()[0] == (
        "path,sha256,label,split,status,votes,agreement,voters,file,source,confidence,"
        "spot_check"
    )
    as_jsonl = export(admin_client, format="jsonl", seed=5)
    assert as_jsonl.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in as_jsonl.get_data(as_text=True).splitlines()]

    for rows in (csv_rows(as_csv), lines):
        assert {r["path"]: r["label"] for r in rows} == paths
        for row in rows:
            assert Path(row["path"]).is_absolute()
            assert row["sha256"] == sha256_of(row["path"])
            assert row["split"] in ("train", "val", "test")
            assert int(row["votes"]) == 1
            assert row["status"] == "agreed" and float(row["agreement"]) == 1.0
            assert row["source"] == "human" and row["confidence"] in ("", None)
            voters = row["voters"] if isinstance(row["voters"], str) else json.dumps(row["voters"])
            assert json.loads(voters) == {"ann": row["label"]}
    # Both formats describe the same split.
    assert {r["path"]: r["split"] for r in csv_rows(as_csv)} == {
        r["path"]: r["split"] for r in lines
    }


def test_only_the_latest_label_is_exported_and_undone_labels_are_not(
    project, as_user, admin_client, digits
):
    client, token = as_user("ann")
    ids = class_ids(project)
    page = client.get("/label").get_data(as_text=True)

    # A: labeled 3, undone, labeled 5: exported as 5.
    first = card_images(page)[0]
    page = answer(client, token, first, str(ids["3"]))
    undo_id = re.search(r'name="annotation_id" value="(\d+)"', page)[1]
    page = client.post("/label/undo", data={"annotation_id": undo_id}, headers=htmx_headers(token))
    page = page.get_data(as_text=True)
    assert card_images(page)[0] == first  # the undone image comes back first
    page = answer(client, token, first, str(ids["5"]))

    # B: labeled 2, undone, then skipped: not exported.
    second = card_images(page)[0]
    page = answer(client, token, second, str(ids["2"]))
    undo_id = re.search(r'name="annotation_id" value="(\d+)"', page)[1]
    page = client.post("/label/undo", data={"annotation_id": undo_id}, headers=htmx_headers(token))
    page = answer(client, token, second, "skip")

    # C: marked unsure: not exported.
    third = card_images(page)[0]
    answer(client, token, third, "unsure")

    rows = csv_rows(export(admin_client, format="csv"))
    assert [(r["path"], r["label"]) for r in rows] == [(str(image_path(project, first)), "5")]
    archive = open_zip(export(admin_client, format="imagefolder", split="1"))
    assert [(m[1], m[2], int(m[3])) for m in image_entries(archive)] == [("train", "5", first)]


def test_votes_count_every_annotator_who_gave_the_label(tmp_path, image_folder, digits):
    project, _ = init_project(tmp_path / "two-votes", image_folder, [str(d) for d in range(10)],
                              votes_per_image=2)
    for name, role in (("admin", "admin"), ("ann", "annotator"), ("bob", "annotator")):
        add_user(project, name, role, PASSWORDS[name])
    app = create_app(project.root, {"TESTING": True})
    labelers: Counter = Counter()
    for name in ("ann", "bob"):
        client = app.test_client()
        token = login(client, name)
        labelers.update(label_through_web(client, token, project, digits, 6).keys())
    assert 2 in labelers.values()  # with two votes wanted, both saw some of the same images

    admin = app.test_client()
    login(admin, "admin")
    rows = csv_rows(export(admin, format="csv"))
    assert rows
    by_path = {str(image_path(project, i)): n for i, n in labelers.items()}
    for row in rows:
        assert int(row["votes"]) == by_path[row["path"]]


# ---------------------------------------------------------------- split


@pytest.mark.parametrize("split", ["0.8,0.1,0.1", "0.7,0.2,0.1", "0.5,0.5", "1", "1/3,1/3,1/3"])
def test_each_class_is_split_on_its_own_by_the_rounding_rule(
    sorted_project, sorted_admin, split
):
    _project, truth = sorted_project
    rows = csv_rows(export(sorted_admin, format="csv", split=split, seed=2))
    assert {r["path"]: r["label"] for r in rows} == truth
    per_class = Counter(truth.values())
    names = exporter.SPLIT_NAMES[: len(split.split(","))]
    for label, n in per_class.items():
        got = Counter(r["split"] for r in rows if r["label"] == label)
        assert [got[name] for name in names] == expected_counts(n, split), label
        assert sum(got.values()) == n


def test_zip_layout_follows_the_split(sorted_project, sorted_admin):
    _project, truth = sorted_project
    split_of = {r["path"]: r["split"] for r in csv_rows(export(sorted_admin, format="csv", seed=4))}
    archive = open_zip(export(sorted_admin, format="imagefolder", seed=4))
    listed = {
        r["file"]: r for r in csv.DictReader(io.StringIO(archive.read("labels.csv").decode()))
    }
    entries = image_entries(archive)
    assert len(entries) == len(truth)
    for match in entries:
        row = listed[match[0]]
        assert (match[1], match[2]) == (split_of[row["path"]], truth[row["path"]])
    for label, n in Counter(truth.values()).items():
        got = Counter(m[1] for m in entries if m[2] == label)
        assert [got["train"], got["val"], got["test"]] == expected_counts(n, "0.8,0.1,0.1")


@pytest.mark.parametrize(
    ("n", "split", "counts"),
    [
        (10, "0.8,0.1,0.1", [8, 1, 1]),
        (4, "0.8,0.1,0.1", [3, 1, 0]),  # remainders .2 .4 .4: the tie goes to val
        (7, "0.8,0.1,0.1", [5, 1, 1]),  # 5.6 .7 .7: two left over, to val and test
        (13, "0.8,0.1,0.1", [11, 1, 1]),  # 10.4 1.3 1.3: the one left over goes to train
        (1, "0.5,0.5", [1, 0]),
        (0, "0.8,0.1,0.1", [0, 0, 0]),
    ],
)
def test_split_counts_worked_examples(n, split, counts):
    assert exporter.split_counts(n, exporter.parse_split(split)) == counts


def test_same_seed_gives_the_same_split_and_another_seed_another(sorted_project, sorted_admin):
    _project, truth = sorted_project

    def assignment(**params):
        rows = csv_rows(export(sorted_admin, format="csv", **params))
        return {r["path"]: r["split"] for r in rows}

    first = assignment(seed=3)
    assert assignment(seed=3) == first
    other = assignment(seed=4)
    assert other != first
    # Another seed picks other images, never other proportions.
    for label in set(truth.values()):
        in_class = [p for p, lab in truth.items() if lab == label]
        assert Counter(first[p] for p in in_class) == Counter(other[p] for p in in_class)
    # No seed given: the project's seed (11, from the fixture).
    assert assignment() == assignment(seed=11)
    assert assignment(seed="") == assignment(seed=11)


# ---------------------------------------------------------------- refusals


BAD_PARAMETERS = [
    ({"format": "xml"}, "unknown format 'xml'; use one of imagefolder, csv, jsonl"),
    ({"split": "0.8,0.1"}, "split parts must sum to 1"),
    ({"split": "0.6,0.6,-0.2"}, "should be non-negative numbers like 0.8,0.1,0.1"),
    ({"split": "a,b,c"}, "should be non-negative numbers like 0.8,0.1,0.1"),
    ({"split": "nan"}, "should be non-negative numbers like 0.8,0.1,0.1"),
    ({"split": "1e999999999"}, "should be non-negative numbers like 0.8,0.1,0.1"),
    ({"split": "0.4,0.3,0.2,0.1"}, "split takes one to three parts"),
    ({"split": "1/0"}, "divides by zero"),
    ({"seed": "abc"}, "seed must be a whole number"),
    ({"seed": "1.5"}, "seed must be a whole number"),
]


def test_bad_parameters_are_refused_with_a_clear_message(admin_client):
    for params, message in BAD_PARAMETERS:
        response = admin_client.get("/export", query_string=params)
        assert response.status_code == 400, params
        assert message in html.unescape(response.get_data(as_text=True)), params
        # htmx callers get the same message as plain text.
        response = admin_client.get("/export", query_string=params, headers={"HX-Request": "true"})
        assert response.status_code == 400, params
        assert response.mimetype == "text/plain"
        assert message in response.get_data(as_text=True), params


def test_annotators_and_visitors_cannot_export(app, as_user):
    ann, _token = as_user("ann")
    assert ann.get("/export").status_code == 403
    assert ann.get("/export?format=csv").status_code == 403
    anonymous = app.test_client().get("/export")
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"].startswith("/login")


def test_admin_page_offers_the_export_form(admin_client):
    page = admin_client.get("/admin/").get_data(as_text=True)
    form = re.search(r'<form method="get" action="/export".*?</form>', page, re.DOTALL)
    assert form
    for name in ("format", "split", "seed"):
        assert f'name="{name}"' in form[0]
    for fmt in exporter.FORMATS.values():
        # A report (format=disputed) is a link of its own, not a choice of data format.
        assert (f'value="{fmt.name}"' in form[0]) != fmt.report, fmt.name


# ---------------------------------------------------------------- the format registry


@pytest.mark.parametrize("fmt", exporter.FORMATS.values(), ids=lambda f: f.name)
def test_every_format_is_served_as_the_registry_says_and_written_alike(
    project, as_user, admin_client, digits, tmp_path, fmt
):
    ann, token = as_user("ann")
    label_through_web(ann, token, project, digits, 4)
    assert fmt.description and "\n" not in fmt.description

    response = export(admin_client, format=fmt.name, seed=2)
    assert response.headers["Content-Type"] == fmt.mimetype
    assert response.headers["Content-Disposition"].endswith(f'.{fmt.suffix}"')

    if fmt.report:  # web only: the CLI refuses it with the web's message for a bad format
        with pytest.raises(exporter.ExportError, match="use one of imagefolder, csv, jsonl$"):
            exporter.parse_format(fmt.name)
        return
    assert exporter.parse_format(fmt.name) is fmt
    out = tmp_path / f"written.{fmt.suffix}"
    db = store.connect(project.db_path)
    try:
        from server.dataset.selection import export_rows

        rows, _ = export_rows(db, exporter.parse_split("0.8,0.1,0.1"), 2)
        assert exporter.write_export(rows, fmt, out, store.disputed_images(db)) == []
    finally:
        db.conn.close()
    if fmt.suffix == "zip":  # entries carry the time they were written: compare what they hold
        written, served = zipfile.ZipFile(out), open_zip(response)
        assert written.namelist() == served.namelist()
        assert all(written.read(name) == served.read(name) for name in written.namelist())
    else:
        assert out.read_bytes() == response.data


# ---------------------------------------------------------------- originals gone or changed


def test_missing_or_changed_originals_go_to_missing_txt(project, as_user, admin_client, digits):
    ann, token = as_user("ann")
    given = label_through_web(ann, token, project, digits, 6)
    gone, changed, *kept = sorted(given)
    image_path(project, gone).unlink()
    # Another real digit under the same name: the label was given to other pixels.
    digit_image(digits.images[1500]).save(image_path(project, changed))

    archive = open_zip(export(admin_client, format="imagefolder"))
    assert sorted(int(m[3]) for m in image_entries(archive)) == kept
    missing = [line.split("\t") for line in archive.read("MISSING.txt").decode().splitlines()]
    assert sorted(missing) == sorted(
        [
            [str(image_path(project, gone)), given[gone], "missing"],
            [str(image_path(project, changed)), given[changed], "changed since it was imported"],
        ]
    )
    listed = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
    assert sorted(r["path"] for r in listed) == sorted(str(image_path(project, i)) for i in kept)

    # CSV needs no files: every labeled image is listed, with the hash that was labeled.
    assert len(csv_rows(export(admin_client, format="csv"))) == 6


def test_nothing_labeled_gives_a_zip_with_only_the_header(admin_client):
    archive = open_zip(export(admin_client, format="imagefolder"))
    assert archive.namelist() == ["labels.csv", "LABELS.md"]
    assert archive.read("labels.csv").decode().strip() == ",".join(exporter.COLUMNS)
    assert "0 images: 0 labeled by people" in archive.read("LABELS.md").decode()


# ---------------------------------------------------------------- names


def test_unicode_and_space_names_survive_the_zip(tmp_path, digits):
    folder = tmp_path / "photos à trier"
    files = {
        ("chat noir", "photo 1.png"): 0,
        ("chat noir", "日本 写真.png"): 1,
        ("Ünïcode 猫", "été #2.png"): 2,
        ("Ünïcode 猫", "plain.png"): 3,
    }
    for (label, name), index in files.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        digit_image(digits.images[index]).save(folder / label / name)
    project, report = init_project(tmp_path / "projet été", folder)
    assert report.labeled == 4
    add_user(project, "admin", "admin", PASSWORDS["admin"])
    client = create_app(project.root, {"TESTING": True}).test_client()
    login(client, "admin")

    response = export(client, format="imagefolder", split="1")
    disposition = response.headers["Content-Disposition"]
    assert disposition.isascii() and disposition.endswith('.zip"')
    archive = open_zip(response)
    entries = {(m[2], m[4]): m[0] for m in image_entries(archive)}
    assert set(entries) == set(files)
    for (label, name), entry in entries.items():
        info = archive.getinfo(entry)
        if not entry.isascii():
            assert info.flag_bits & 0x800  # the name is marked UTF-8 for unzip tools
        assert stat.S_ISREG(info.external_attr >> 16)
        assert (info.external_attr >> 16) & 0o044 == 0o044  # readable once unzipped
        assert archive.read(entry) == (folder / label / name).read_bytes()
    listed = archive.read("labels.csv").decode("utf-8")
    assert "Ünïcode 猫" in listed and "日本 写真.png" in listed

    jsonl = export(client, format="jsonl").get_data(as_text=True)
    rows = [json.loads(line) for line in jsonl.splitlines()]
    assert {(r["label"], Path(r["path"]).name) for r in rows} == set(files)
