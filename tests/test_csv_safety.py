"""CSV formula injection: class and file names that a spreadsheet would run as a formula
(=HYPERLINK(...), @SUM(...), +cmd, -1) reach every CSV the product writes with a leading
quote, as OWASP advises; numbers stay numbers, and the JSONL export keeps the exact names.
On a real project of real digit images, through the web, the CLI, a round and a quality run."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from conftest import PASSWORDS, login, write_digits

from server import store
from server.app import create_app
from server.cli.main import main
from server.jobs.quality import run_quality
from server.jobs.round import run_round
from server.projects import add_user, init_project, open_db
from server.store import job_rows

HOSTILE = '=HYPERLINK("evil.example","y")'  # a class name cannot hold '/', so no http://
# One class per digit; the digit's true label picks the class.
CLASS_NAMES = [HOSTILE, "-1", "+2", "@3", "4", "5", "6", "7", "8", "9"]
HOSTILE_FILES = {0: "@SUM(1+1)-0000.png", 1: "+cmd-0001.png", 2: "=1+2-0002.png",
                 3: "-0003.png"}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
FAST = {"input_size": 32, "loader_workers": 0, "batch_size": 32}


def quoted(name: str) -> str:
    """What a cell holding `name` should read."""
    return "'" + name if name.startswith(FORMULA_START) else name


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, digits):
    """60 real digits, four of them renamed to formula-like names and left unlabeled; 3
    images of each class labeled alike by ann and bob, one image disputed between the
    '=HYPERLINK' class (two votes) and '-1' (one); one finished round and one finished
    quality run."""
    folder = tmp_path_factory.mktemp("hostile")
    truth = write_digits(folder / "images", digits, 60)
    for index, name in HOSTILE_FILES.items():
        (folder / "images" / f"digit-{index:04d}.png").rename(folder / "images" / name)
    project, _ = init_project(folder / "project", folder / "images", CLASS_NAMES, seed=3,
                              votes_per_image=2, qa_fraction=0.0,
                              agreement_threshold=0.7, **FAST)
    for name, role in (("admin", "admin"), ("ann", "annotator"), ("bob", "annotator")):
        add_user(project, name, role, PASSWORDS[name])
    digit_of = {Path(path).name: int(label) for path, label in truth.items()}
    db = open_db(project)
    try:
        classes = {c["name"]: c["id"] for c in store.classes(db)}
        users = [store.get_user_by_name(db, n)["id"] for n in ("admin", "ann", "bob")]
        images = list(db.query("SELECT id, rel_path FROM images ORDER BY id"))
        plain = [r for r in images if r["rel_path"].startswith("digit-")]
        labeled: dict[int, int] = {}
        for row in plain:
            digit = digit_of[row["rel_path"]]
            if list(labeled.values()).count(digit) < 3:
                labeled[row["id"]] = digit
        for image_id, digit in labeled.items():
            for user in users[1:]:
                store.add_vote(db, user, image_id, "label", classes[CLASS_NAMES[digit]])
        disputed = next(r["id"] for r in plain if r["id"] not in labeled)
        for user, name in zip(users, (HOSTILE, HOSTILE, "-1"), strict=True):  # 2/3 < 0.7
            store.add_vote(db, user, disputed, "label", classes[name])
        round_id = job_rows.queue(db, "rounds", users[0], strategy="margin")[0]
        quality_id, _ = job_rows.queue(db, "quality_runs", None)
    finally:
        db.conn.close()
    run_round(project, round_id)
    run_quality(project, quality_id)
    client = create_app(project.root, {"TESTING": True}).test_client()
    login(client, "admin")
    return project, client, round_id


def get(client, url: str, **params) -> str:
    response = client.get(url, query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def test_the_csv_export_quotes_formula_class_names_and_jsonl_keeps_them(hostile):
    _project, client, _ = hostile
    rows = rows_of(get(client, "/export", format="csv", split="1"))
    assert len(rows) == 30
    labels = {r["label"] for r in rows}
    assert "'" + HOSTILE in labels and {"'-1", "'+2", "'@3", "4"} <= labels
    assert HOSTILE not in labels
    for row in rows:
        assert not row["label"].startswith(FORMULA_START), row
        assert row["votes"] == "2" and float(row["agreement"]) == 1.0  # numbers, unquoted
        assert json.loads(row["voters"])["ann"] == row["label"].removeprefix("'")

    exact = [json.loads(line) for line in get(client, "/export", format="jsonl").splitlines()]
    assert {r["label"] for r in exact} == {label.removeprefix("'") for label in labels}
    assert HOSTILE in {r["label"] for r in exact}


def test_the_zip_labels_and_disputed_csv_are_quoted(hostile):
    _project, client, _ = hostile
    response = client.get("/export", query_string={"format": "imagefolder", "split": "1"})
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    labels = rows_of(archive.read("labels.csv").decode("utf-8"))
    assert "'" + HOSTILE in {r["label"] for r in labels}
    folder = "train/" + HOSTILE.replace('"', "_") + "/"  # a path in the zip, not a cell
    assert any(name.startswith(folder) for name in archive.namelist())
    (disputed,) = rows_of(archive.read("DISPUTED.csv").decode("utf-8"))
    assert disputed["leading_label"] == "'" + HOSTILE
    assert disputed["status"] == "disputed" and disputed["votes"] == "3"
    (alone,) = rows_of(get(client, "/export", format="disputed"))
    assert alone == disputed


def test_the_cli_export_writes_the_same_quoted_cells(hostile, runner, tmp_path):
    project, _client, _ = hostile
    out = tmp_path / "labels.csv"
    result = runner.invoke(main, ["export", str(project.root), str(out), "--format", "csv",
                                  "--split", "1"])
    assert result.exit_code == 0, result.output
    labels = {r["label"] for r in rows_of(out.read_text(encoding="utf-8"))}
    assert "'" + HOSTILE in labels and HOSTILE not in labels


def test_predictions_csv_quotes_formula_file_and_class_names(hostile):
    _project, client, round_id = hostile
    rows = rows_of(get(client, f"/admin/rounds/{round_id}/predictions.csv"))
    files = {r["file"] for r in rows}
    assert {quoted(name) for name in HOSTILE_FILES.values()} <= files
    for row in rows:
        assert not row["file"].startswith(FORMULA_START), row
        assert row["predicted"] in {quoted(name) for name in CLASS_NAMES}, row
        float(row["confidence"]), float(row["score"]), int(row["rank"])  # numbers, unquoted


def test_suspects_csv_quotes_formula_class_names(hostile):
    _project, client, _ = hostile
    rows = rows_of(get(client, "/admin/quality/suspects.csv"))
    assert len(rows) == 30
    allowed = {quoted(name) for name in CLASS_NAMES}
    assert "'" + HOSTILE in {r["given"] for r in rows}
    for row in rows:
        assert row["given"] in allowed and row["suggested"] in allowed, row
        assert 0 <= float(row["score"]) <= 1 and int(row["rank"]) >= 1


def test_simulation_reports_quote_a_formula_annotator_name(tmp_path):
    from server.simulation.annotators import AnnotatorScore, ConsensusReport, write_reports

    report = ConsensusReport("margin", images=3, votes=3, agreed=3, adjudicated=0, disputed=0,
                             waiting=0, right=2,
                             annotators=[AnnotatorScore("=cmd|' /C calc'!A0", 0.9, 3, 2)])
    _consensus, annotators = write_reports([report], tmp_path)
    (row,) = rows_of(annotators.read_text(encoding="utf-8"))
    assert row["annotator"] == "'=cmd|' /C calc'!A0" and row["votes"] == "3"


def test_a_quoted_cell_reads_back_as_it_was(tmp_path):
    from server.dataset import csv_writer
    from server.simulation.plan import read_labels_csv

    values = [HOSTILE, "-1", "+2", "@3", "\tx", "\rx", "'=x", "''@x", "'plain", "plain", "",
              "1-2"]
    written = [csv_writer.safe_cell(value) for value in values]
    assert written[:8] == ["'" + value for value in values[:8]]
    assert written[8:] == values[8:]
    assert [csv_writer.read_cell(cell) for cell in written] == values
    # The oracle reader (the demo writes its oracle with this writer) gets the names back,
    # even a tab the quote keeps from its strip(); it skips an empty label.
    oracle = tmp_path / "oracle.csv"
    with oracle.open("w", newline="", encoding="utf-8") as handle:
        writer = csv_writer.writer(handle)
        writer.writerow(["file", "label"])
        writer.writerows([f"{i}.png", value] for i, value in enumerate(values))
    assert read_labels_csv(oracle) == {f"{i}.png": value for i, value in enumerate(values)
                                       if value}


@pytest.mark.parametrize("number", [-0.5, -1])
def test_numbers_stay_numbers_and_a_name_like_a_number_is_quoted(number):
    from server.dataset import csv_writer

    buffer = io.StringIO()
    writer = csv_writer.DictWriter(buffer, fieldnames=["value"])
    writer.writerows([{"value": number}, {"value": str(number)}])
    assert buffer.getvalue().split() == [str(number), f"'{number}"]
