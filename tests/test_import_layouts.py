"""The folder layouts and label files an import understands (issue 15): pools of unlabeled
images, maybe folders, train/val/test split folders, label files, what the report says it
understood, and importing again after people labeled. Real digits on disk, the real command
(click's CliRunner), the real store and the real admin pages; nothing is mocked."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import PASSWORDS, login, write_digits

from server import store
from server.app import create_app
from server.cli.main import main
from server.config import CONFIG_NAME, Project
from server.projects import add_user
from server.store import rounds as round_store

# --- helpers --------------------------------------------------------------------------------


def run(runner, *args):
    return runner.invoke(main, [str(a) for a in args])


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.stdout


def clean_error(result, message: str) -> str:
    """Exit status 1 and a message for a person, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert message in result.stderr, result.stderr
    return result.stderr


def query(project_dir, sql: str, params=()) -> list[tuple]:
    db = store.connect(Path(project_dir) / "activelabel.db")
    try:
        return db.execute(sql, list(params)).fetchall()
    finally:
        db.conn.close()


def class_names(project_dir) -> list[str]:
    return [r[0] for r in query(project_dir, "SELECT name FROM classes ORDER BY position")]


def states(project_dir) -> dict[str, tuple[str, str | None]]:
    """rel_path -> (consensus status, class name)."""
    return {r[0]: (r[1], r[2]) for r in query(
        project_dir,
        "SELECT i.rel_path, s.status, c.name FROM images i JOIN image_state s"
        " ON s.image_id = i.id LEFT JOIN classes c ON c.id = s.class_id")}


def snapshot(project_dir) -> tuple:
    """Everything an import could change: a failed one must leave all of it as it was."""
    return tuple(query(project_dir, f"SELECT * FROM {table} ORDER BY 1") for table in
                 ("classes", "images", "image_state", "annotations", "import_runs", "queue"))


def query_issues(project_dir, import_id: int) -> list[dict]:
    db = store.connect(Path(project_dir) / "activelabel.db")
    try:
        return store.import_issues(db, import_id)
    finally:
        db.conn.close()


def image_ids(project_dir) -> dict[str, int]:
    return dict(query(project_dir, "SELECT rel_path, id FROM images"))


@pytest.fixture
def team_folder(tmp_path, digits):
    """The most common folder a team has: DIR/0 ... DIR/9 with a few sorted images each,
    DIR/pool/ (everything not sorted yet), DIR/maybe/ and DIR/3/maybe/ (the doubtful ones)
    and two images loose at the top. Returns (folder, {path: label} of the sorted ones)."""
    folder = tmp_path / "team"
    truth = write_digits(folder, digits, 40, per_class=True)
    write_digits(folder / "pool", digits, 120, start=100)
    write_digits(folder / "maybe", digits, 4, start=300)
    write_digits(folder / "3" / "maybe", digits, 2, start=400)
    write_digits(folder, digits, 2, start=500)
    return folder, truth


# --- 1. folders of unlabeled images ---------------------------------------------------------


def test_a_team_folder_is_ten_classes_a_pool_and_maybes_in_review(tmp_path, runner,
                                                                   team_folder):
    folder, truth = team_folder
    project = tmp_path / "p"
    out = ok(run(runner, "init", project, "--images", folder))

    assert ok(run(runner, "classes", project)).split() == [str(d) for d in range(10)]
    per_class = Counter(truth.values())
    assert "168 images added (40 labeled from class folders), 0 duplicates" in out
    assert "  10 classes: " + ", ".join(f"{d} ({per_class[str(d)]})" for d in range(10)) in out
    assert "  122 unlabeled (in pool/, the top level)\n" in out
    assert "  6 maybe (in 3/maybe/, maybe/): an 'unsure' answer each, for review" in out
    assert "Warning" not in out and "not classes" not in out

    found = states(project)
    assert {k: v for k, v in found.items() if v[0] == "agreed"} == {
        Path(p).relative_to(folder).as_posix(): ("agreed", label) for p, label in truth.items()}
    assert {k for k, v in found.items() if v == ("needs_votes", None)} == (
        {f"pool/digit-{i:04d}.png" for i in range(100, 220)}
        | {"digit-0500.png", "digit-0501.png"})
    maybes = {k for k, v in found.items() if v[0] == "disputed"}
    assert maybes == ({f"maybe/digit-{i:04d}.png" for i in range(300, 304)}
                      | {"3/maybe/digit-0400.png", "3/maybe/digit-0401.png"})
    # an 'unsure' answer from the import, the class folder kept as its hint, and a review
    # request beside it
    answers = query(project, "SELECT i.rel_path, a.kind, a.source, a.user_id, c.name FROM"
                             " annotations a JOIN images i ON i.id = a.image_id LEFT JOIN classes c"
                             " ON c.id = a.class_id WHERE i.rel_path LIKE '%maybe/%'")
    assert sorted(answers) == sorted(
        [(p, "unsure", "import", None, "3" if p.startswith("3/") else None) for p in maybes]
        + [(p, "review", "import", None, None) for p in maybes])

    db = store.connect(project / "activelabel.db")
    try:
        in_review = {store.get_image(db, i)["rel_path"] for i in store.review_queue(db, 100)}
        trained = {r["path"] for r in round_store.training_set(db)}
        queued = {r[0] for r in db.execute(
            "SELECT i.rel_path FROM queue q JOIN images i ON i.id = q.image_id")}
        assert round_store.trained_class_count(db) == 10
    finally:
        db.conn.close()
    assert in_review == maybes
    assert trained == set(truth)  # neither the pool nor the maybes train the model
    assert queued == {k for k, v in found.items() if v[0] == "needs_votes"}


@pytest.mark.parametrize("name", ["unlabeled", "Unsorted", "POOL", "todo", "New", "_unlabeled",
                                  "unlabelled"])
def test_folders_named_like_a_pool_import_unlabeled_in_any_case(tmp_path, runner, digits,
                                                                name):
    folder = tmp_path / "images"
    write_digits(folder / "cat", digits, 2)
    write_digits(folder / "dog", digits, 2, start=2)
    write_digits(folder / name, digits, 3, start=4)

    out = ok(run(runner, "init", tmp_path / "p", "--images", folder))

    assert class_names(tmp_path / "p") == ["cat", "dog"]
    assert f"  3 unlabeled (in {name}/)\n" in out and "not classes" not in out
    assert Counter(status for status, _ in states(tmp_path / "p").values()) == {
        "agreed": 4, "needs_votes": 3}


def test_unlabeled_folder_names_more_pools_on_init_and_import(tmp_path, runner, digits):
    folder = tmp_path / "images"
    write_digits(folder / "cat", digits, 2)
    write_digits(folder / "inbox", digits, 2, start=2)
    write_digits(folder / "Later", digits, 2, start=4)
    project = tmp_path / "p"

    out = ok(run(runner, "init", project, "--images", folder,
                 "--unlabeled-folder", "inbox", "--unlabeled-folder", "later"))

    assert class_names(project) == ["cat"]
    assert "  4 unlabeled (in Later/, inbox/)\n" in out
    # On import it wins even over a class of that name: the person said so for this import.
    ok(run(runner, "classes", project, "--add", "scans"))
    write_digits(tmp_path / "more" / "scans", digits, 2, start=10)
    out = ok(run(runner, "import", project, tmp_path / "more", "--unlabeled-folder", "SCANS"))
    assert "2 images added (0 labeled from class folders)" in out
    assert {v for k, v in states(project).items() if k.startswith("scans/")} == {
        ("needs_votes", None)}


def test_classes_given_mean_only_those_folders_are_classes(tmp_path, runner, digits):
    folder = tmp_path / "images"
    for start, name in enumerate(("a", "b", "c")):
        write_digits(folder / name, digits, 2, start=2 * start)
    write_digits(folder, digits, 1, start=10)  # directly in DIR: unlabeled, as always

    out = ok(run(runner, "init", tmp_path / "p", "--images", folder, "--classes", "a,b"))

    assert class_names(tmp_path / "p") == ["a", "b"]
    assert "folders that are not classes (imported unlabeled): c\n" in out
    assert "  3 unlabeled (in c/, the top level)\n" in out
    assert sorted(k for k, v in states(tmp_path / "p").items() if v[1] is None) == [
        "c/digit-0004.png", "c/digit-0005.png", "digit-0010.png"]


def test_a_class_that_is_also_an_unlabeled_folder_is_refused(tmp_path, runner, team_folder):
    folder, _ = team_folder
    clean_error(run(runner, "init", tmp_path / "p", "--images", folder, "--classes", "0,1,pool",
                    "--unlabeled-folder", "pool"),
                "pool: a class and an --unlabeled-folder at once")
    assert not (tmp_path / "p").exists()


# --- 2. maybe folders -----------------------------------------------------------------------


def test_maybe_and_unsure_folders_give_unsure_answers_with_their_class_as_hint(
    tmp_path, runner, digits
):
    folder = tmp_path / "images"
    write_digits(folder / "cat", digits, 2)
    write_digits(folder / "dog", digits, 2, start=2)
    write_digits(folder / "cat" / "Maybe", digits, 1, start=10)
    write_digits(folder / "unsure", digits, 1, start=11)
    write_digits(folder / "MAYBE" / "dog", digits, 1, start=12)
    project = tmp_path / "p"

    out = ok(run(runner, "init", project, "--images", folder))

    assert class_names(project) == ["cat", "dog"]
    assert "  3 maybe (in MAYBE/, cat/Maybe/, unsure/)" in out
    assert sorted(query(project, "SELECT i.rel_path, a.kind, c.name FROM annotations a"
                                 " JOIN images i ON i.id = a.image_id LEFT JOIN classes c"
                                 " ON c.id = a.class_id WHERE a.kind = 'unsure'")) == [
        ("MAYBE/dog/digit-0012.png", "unsure", "dog"),
        ("cat/Maybe/digit-0010.png", "unsure", "cat"),
        ("unsure/digit-0011.png", "unsure", None),
    ]
    assert Counter(s for s, _ in states(project).values()) == {"agreed": 4, "disputed": 3}


def test_a_maybe_image_trains_nothing_until_someone_decides(tmp_path, runner, digits):
    """Even with two votes per image a maybe image is in review from the start (the import
    appends a review request beside its unsure answer): no annotator is handed it, and it
    trains once a reviewer decides."""
    folder = tmp_path / "images"
    write_digits(folder / "cat", digits, 2)
    write_digits(folder / "dog", digits, 2, start=2)
    write_digits(folder / "maybe", digits, 1, start=10)
    project = tmp_path / "p"
    ok(run(runner, "init", project, "--images", folder, "--votes-per-image", 2))
    created = Project.open(project)
    add_user(created, "ann", "annotator", PASSWORDS["ann"])
    add_user(created, "rita", "reviewer", "rita-password")

    db = store.connect(project / "activelabel.db")
    try:
        image = store.get_image(db, image_ids(project)["maybe/digit-0010.png"])
        cat = next(c["id"] for c in store.classes(db) if c["name"] == "cat")
        assert store.state_of(db, image["id"])["status"] == "disputed"
        ann = store.get_user_by_name(db, "ann")["id"]
        handed = store.next_images(db, ann, n=10)
        assert image["id"] not in handed
        assert image["id"] not in {r["id"] for r in round_store.training_set(db)}
        assert store.review_queue(db, 10) == [image["id"]]
        store.adjudicate(db, store.get_user_by_name(db, "rita")["id"], image["id"], cat)
        assert image["id"] in {r["id"] for r in round_store.training_set(db)}
    finally:
        db.conn.close()


# --- 3. split layouts -----------------------------------------------------------------------


def write_split_layout(folder: Path, digits) -> dict[str, tuple[str, str]]:
    """DIR/train/<digit>/, DIR/valid/<digit>/ and DIR/test/<digit>/, what most public data sets
    ship as; returns {file name: (label, split)}."""
    expected = {}
    for split, folder_name, start, count in (("train", "train", 0, 30), ("val", "valid", 30, 10),
                                             ("test", "test", 40, 10)):
        for path, label in write_digits(folder / folder_name, digits, count, start=start,
                                        per_class=True).items():
            expected[Path(path).name] = (label, split)
    return expected


def kept(project_dir) -> dict[str, tuple[str | None, str | None]]:
    """file name -> (consensus label, the split stored on the image)."""
    return {Path(r[0]).name: (r[1], r[2]) for r in query(
        project_dir, "SELECT i.rel_path, c.name, i.split FROM images i JOIN image_state s"
                     " ON s.image_id = i.id LEFT JOIN classes c ON c.id = s.class_id")}


def test_split_folders_give_classes_from_the_second_level_and_keep_the_split(
    tmp_path, runner, digits
):
    folder = tmp_path / "dataset"
    expected = write_split_layout(folder, digits)
    write_digits(folder / "train" / "unlabeled", digits, 2, start=60)
    write_digits(folder / "test", digits, 2, start=70)  # a flat test/ beside: still a split

    out = ok(run(runner, "init", tmp_path / "p", "--images", folder))

    assert class_names(tmp_path / "p") == sorted({label for label, _ in expected.values()})
    assert "  Splits kept: train 32, val 10, test 12\n" in out
    assert "  4 unlabeled (in test/, train/unlabeled/)\n" in out
    stored = kept(tmp_path / "p")
    assert {name: stored[name] for name in expected} == expected
    assert stored["digit-0060.png"] == (None, "train")
    assert stored["digit-0070.png"] == (None, "test")


def test_a_class_named_train_is_a_class_not_a_split(tmp_path, runner, digits):
    folder = tmp_path / "vehicles"
    write_digits(folder / "car", digits, 2)
    write_digits(folder / "train", digits, 2, start=2)
    write_digits(folder / "train" / "maybe", digits, 1, start=4)

    ok(run(runner, "init", tmp_path / "p", "--images", folder))

    assert class_names(tmp_path / "p") == ["car", "train"]
    assert query(tmp_path / "p", "SELECT count(*) FROM images WHERE split IS NOT NULL") == [(0,)]
    assert states(tmp_path / "p")["train/maybe/digit-0004.png"] == ("disputed", None)


def test_a_split_layout_round_trips_through_the_imagefolder_export(tmp_path, runner, digits):
    folder = tmp_path / "dataset"
    expected = write_split_layout(folder, digits)
    ok(run(runner, "init", tmp_path / "p", "--images", folder))
    out_folder = tmp_path / "export"

    out = ok(run(runner, "export", tmp_path / "p", out_folder, "--format", "imagefolder",
                 "--split", "keep"))

    assert "Wrote 50 labeled images" in out and "(train 30, val 10, test 10)" in out
    exported = {path.name.split("-", 1)[1]: (path.parent.name, path.parent.parent.name)
                for path in out_folder.rglob("*.png")}
    assert exported == expected
    # and back in: the export is a split layout itself (labels.csv and LABELS.md beside
    # are not images)
    back = ok(run(runner, "init", tmp_path / "p2", "--images", out_folder))
    assert "50 images added (50 labeled from class folders)" in back
    assert "2 other files ignored" in back and "Splits kept: train 30, val 10, test 10" in back
    assert class_names(tmp_path / "p2") == class_names(tmp_path / "p")
    again = query(tmp_path / "p2", "SELECT i.sha256, c.name, i.split FROM images i JOIN"
                                   " image_state s ON s.image_id = i.id JOIN classes c"
                                   " ON c.id = s.class_id")
    first = query(tmp_path / "p", "SELECT i.sha256, c.name, i.split FROM images i JOIN"
                                  " image_state s ON s.image_id = i.id JOIN classes c"
                                  " ON c.id = s.class_id")
    assert sorted(again) == sorted(first)


def test_split_keep_puts_images_imported_without_a_split_in_train(tmp_path, runner,
                                                                  team_folder):
    folder, truth = team_folder
    ok(run(runner, "init", tmp_path / "p", "--images", folder))
    out = ok(run(runner, "export", tmp_path / "p", tmp_path / "out.csv", "--format", "csv",
                 "--split", "keep"))
    assert f"Wrote {len(truth)} labeled images to {tmp_path / 'out.csv'} (train {len(truth)})\n" \
        in out
    with (tmp_path / "out.csv").open(encoding="utf-8", newline="") as handle:
        assert {row["split"] for row in csv.DictReader(handle)} == {"train"}


def test_the_web_export_keeps_the_split_too(tmp_path, runner, digits):
    expected = write_split_layout(tmp_path / "dataset", digits)
    ok(run(runner, "init", tmp_path / "p", "--images", tmp_path / "dataset"))
    add_user(Project.open(tmp_path / "p"), "admin", "admin", PASSWORDS["admin"])
    client = create_app(tmp_path / "p", {"TESTING": True}).test_client()
    login(client, "admin")

    response = client.get("/export?format=csv&split=keep")

    assert response.status_code == 200
    rows = csv.DictReader(response.get_data(as_text=True).splitlines())
    assert {Path(row["path"]).name: (row["label"], row["split"]) for row in rows} == expected


# --- 4. label files -------------------------------------------------------------------------


def write_label_file(path: Path, rows: list[tuple[str, str]], fmt: str) -> Path:
    if fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as handle:
            handle.write("file,label\n")
            handle.writelines(f"{name},{label}\n" for name, label in rows)
    else:
        path.write_text("".join(json.dumps({"file": name, "label": label}) + "\n"
                                for name, label in rows), encoding="utf-8")
    return path


@pytest.fixture
def digits_project(tmp_path, runner, digits):
    """A project with classes 0-9 and 40 unlabeled digits; returns its folder."""
    write_digits(tmp_path / "first", digits, 40)
    ok(run(runner, "init", tmp_path / "p", "--images", tmp_path / "first",
           "--classes", ",".join(str(d) for d in range(10))))
    return tmp_path / "p"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_label_file_labels_the_images_it_names(tmp_path, runner, digits, digits_project,
                                                 fmt):
    folder = tmp_path / "batch"
    truth = write_digits(folder / "sub", digits, 6, start=100)
    write_digits(folder / "7", digits, 1, start=200)  # the file says 1: the file wins
    rows = [(f"sub/{Path(p).name}", label) for p, label in truth.items()][:5]
    rows += [("7/digit-0200.png", "1"), ("./sub/../gone.png", "3")]
    labels = write_label_file(tmp_path / f"labels.{fmt}", rows, fmt)

    out = ok(run(runner, "import", digits_project, folder, "--labels", labels))

    assert "7 images added (0 labeled from class folders, 6 from the label file)" in out
    assert f"  Label file labels.{fmt}: 7 rows, 6 images labeled by it\n" in out
    assert (f"  not found: {folder / 'gone.png'}: line {8 if fmt == 'csv' else 7} of"
            f" labels.{fmt} names it; no such image in the folder") in out
    found = states(digits_project)
    assert {name: found[name] for name, _ in rows[:6]} == {
        name: ("agreed", label) for name, label in rows[:6]}
    assert found["sub/digit-0105.png"] == ("needs_votes", None)  # not in the file
    assert query(digits_project, "SELECT DISTINCT source, user_id FROM annotations") == [
        ("import", None)]


def test_label_file_classes_the_project_lacks_need_add_classes(tmp_path, runner, digits,
                                                               digits_project):
    folder = tmp_path / "batch"
    write_digits(folder, digits, 3, start=100)
    labels = write_label_file(tmp_path / "labels.csv", [
        ("digit-0100.png", "bird"), ("digit-0101.png", "1"), ("digit-0102.png", "fish")], "csv")
    before = snapshot(digits_project)

    clean_error(run(runner, "import", digits_project, folder, "--labels", labels),
                "label file labels.csv names classes the project does not have: bird, fish;"
                " pass --add-classes to add them")
    assert snapshot(digits_project) == before

    out = ok(run(runner, "import", digits_project, folder, "--labels", labels, "--add-classes"))
    assert "3 from the label file" in out
    assert class_names(digits_project)[-2:] == ["bird", "fish"]
    assert states(digits_project)["digit-0100.png"] == ("agreed", "bird")


def test_init_takes_classes_from_a_label_file(tmp_path, runner, digits):
    folder = tmp_path / "flat"
    write_digits(folder, digits, 3)
    labels = write_label_file(tmp_path / "labels.jsonl", [
        ("digit-0000.png", "zero"), ("digit-0001.png", "one")], "jsonl")
    out = ok(run(runner, "init", tmp_path / "p", "--images", folder, "--labels", labels))
    assert class_names(tmp_path / "p") == ["zero", "one"]
    assert "3 images added (0 labeled from class folders, 2 from the label file)" in out


BAD_LABEL_FILES = {
    "not utf-8": (b"file,label\ndigit-0100.png,caf\xe9\n",
                  "label file {file} is not UTF-8 text (byte 0xe9 on line 2); save it as"
                  " UTF-8"),
    "no header": (b"digit-0100.png,1\ndigit-0101.png,2\n",
                  "label file {file}: the first line must be a header naming the columns"
                  " `file` and `label` (it is 'digit-0100.png,1')"),
    "unknown class": (b"file,label\ndigit-0100.png,cat\n",
                      "names classes the project does not have: cat; pass --add-classes"),
    "outside": (b"file,label\ndigit-0100.png,1\n../first/digit-0000.png,2\n",
                "label file {file} line 3: '../first/digit-0000.png' points outside the"
                " image folder"),
    "absolute outside": (b"file,label\n/etc/hostname,1\n",
                         "line 2: '/etc/hostname' points outside the image folder"),
    "two labels": (b"file,label\ndigit-0100.png,1\n./digit-0100.png,2\n",
                   "label file {file} line 3 labels 'digit-0100.png' '2', line 2 labels"
                   " it '1'"),
    "empty label": (b"file,label\ndigit-0100.png,\n", "line 2: the file or the label is empty"),
    "short row": (b"file,label\ndigit-0100.png\n", "line 2: expected 2 columns, found 1"),
    "bad json": (b'{"file": "digit-0100.png", "label": "1"}\n{"file": \n',
                 "label file {file} line 2 is not JSON"),
    "json without label": (b'{"file": "digit-0100.png"}\n',
                           'line 1: expected an object with "file" and "label"'),
    "empty": (b"", "label file {file} is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABEL_FILES))
def test_a_bad_label_file_is_a_clear_error_and_changes_nothing(tmp_path, runner, digits,
                                                               digits_project, case):
    content, message = BAD_LABEL_FILES[case]
    message = message.format(file=tmp_path / "labels.csv")
    folder = tmp_path / "batch"
    write_digits(folder, digits, 2, start=100)
    (tmp_path / "labels.csv").write_bytes(content)
    before = snapshot(digits_project)

    clean_error(run(runner, "import", digits_project, folder, "--labels",
                    tmp_path / "labels.csv"), message)

    assert snapshot(digits_project) == before
    # the same file on init: no project is made
    clean_error(run(runner, "init", tmp_path / "new", "--images", folder, "--classes", "1,2",
                    "--labels", tmp_path / "labels.csv"), message)
    assert not (tmp_path / "new").exists()


def test_a_missing_label_file_is_a_clear_error(tmp_path, runner, digits_project):
    clean_error(run(runner, "import", digits_project, tmp_path / "first", "--labels",
                    tmp_path / "nope.csv"), f"label file {tmp_path / 'nope.csv'} does not exist")


def test_our_own_export_labels_csv_reads_back_as_a_label_file(tmp_path, runner, digits):
    """The export quotes a cell a spreadsheet would run ('-1' -> "'-1"); read back, the
    label is the class again."""
    folder = tmp_path / "signs"
    write_digits(folder / "-1", digits, 3)
    write_digits(folder / "+1", digits, 3, start=3)
    ok(run(runner, "init", tmp_path / "p", "--images", folder))
    ok(run(runner, "export", tmp_path / "p", tmp_path / "out"))
    assert "'-1" in (tmp_path / "out" / "labels.csv").read_text(encoding="utf-8")

    out = ok(run(runner, "init", tmp_path / "p2", "--images", tmp_path / "out", "--labels",
                 tmp_path / "out" / "labels.csv"))
    assert "(0 labeled from class folders, 6 from the label file)" in out
    assert sorted(class_names(tmp_path / "p2")) == ["+1", "-1"]


# --- 5. what the report says it understood --------------------------------------------------


def test_the_report_warns_about_a_class_that_looks_like_a_pool(tmp_path, runner, team_folder):
    folder, truth = team_folder
    project = tmp_path / "p"
    out = ok(run(runner, "init", project, "--images", folder,
                 "--classes", ",".join([*map(str, range(10)), "pool"])))

    median = sorted(Counter(truth.values()).values())[4:6]
    assert ("Warning: class 'pool' is named like a folder of unlabeled images, and its 120"
            " images were imported labeled 'pool'; if it is not a class, leave it out of"
            " --classes (or import with --unlabeled-folder pool)\n") in out
    assert (f"Warning: class 'pool' holds 120 images, more than 10x the median of the other"
            f" classes ({sum(median) / 2:g}): is it a pool of unsorted images?\n") in out

    add_user(Project.open(project), "admin", "admin", PASSWORDS["admin"])
    client = create_app(project, {"TESTING": True}).test_client()
    login(client, "admin")
    page = html.unescape(client.get("/admin/imports/1").get_data(as_text=True))
    for line in out.splitlines():
        if line.startswith("Warning: "):
            assert f"<p class=\"warning\">{line}</p>" in page
        elif re.match(r"  \d+ (classes|unlabeled|maybe)", line):
            assert f"<li>{line.strip()}</li>" in page
    assert "11 classes: 0 (" in page and "pool (120)" in page
    admin = html.unescape(client.get("/admin/").get_data(as_text=True))
    assert "Import 1</a>: 2 warnings: class 'pool' is named like" in admin


def test_the_report_page_shows_what_an_import_understood(tmp_path, runner, team_folder):
    folder, _truth = team_folder
    project = tmp_path / "p"
    out = ok(run(runner, "init", project, "--images", folder))
    add_user(Project.open(project), "admin", "admin", PASSWORDS["admin"])
    client = create_app(project, {"TESTING": True}).test_client()
    login(client, "admin")

    page = html.unescape(client.get("/admin/imports/1").get_data(as_text=True))

    assert "168 added (40 labeled from class folders), 0 duplicates" in page
    shown = re.findall(r"<li>(.*?)</li>", page.split('class="understood"')[1].split("</ul>")[0])
    assert shown == [line.strip() for line in out.splitlines()
                     if re.match(r"  \d+ (classes|unlabeled|maybe)", line)]
    assert 'class="warning"' not in page


# --- 8. importing again after people labeled ------------------------------------------------


def test_importing_again_adds_only_what_is_new_and_never_touches_an_answer(
    tmp_path, runner, team_folder, digits
):
    folder, _truth = team_folder
    project = tmp_path / "p"
    ok(run(runner, "init", project, "--images", folder))
    add_user(Project.open(project), "ann", "annotator", PASSWORDS["ann"])
    add_user(Project.open(project), "rita", "reviewer", "rita-password")
    db = store.connect(project / "activelabel.db")
    try:
        by_rel = image_ids(project)
        ids = {c["name"]: c["id"] for c in store.classes(db)}
        ann = store.get_user_by_name(db, "ann")["id"]
        for index in range(100, 105):
            store.add_vote(db, ann, by_rel[f"pool/digit-{index:04d}.png"], "label", ids["4"])
        store.add_vote(db, ann, by_rel["pool/digit-0105.png"], "skip")
        store.adjudicate(db, store.get_user_by_name(db, "rita")["id"],
                         by_rel["maybe/digit-0300.png"], ids["2"])
    finally:
        db.conn.close()
    answers = query(project, "SELECT * FROM annotations ORDER BY id")

    # the same folder again: nothing new, nothing touched
    again = ok(run(runner, "import", project, folder))
    assert again.startswith("0 images added (0 labeled from class folders), 168 duplicates")
    assert query(project, "SELECT * FROM annotations ORDER BY id") == answers

    # new images in the pool and a class folder; people sorted pool images on disk: one that
    # nobody had answered gets the folder's label, one that was answered keeps its answers
    write_digits(folder / "pool", digits, 3, start=600)
    write_digits(folder / "8", digits, 2, start=700)
    shutil.move(folder / "pool" / "digit-0150.png", folder / "6" / "digit-0150.png")
    shutil.move(folder / "pool" / "digit-0101.png", folder / "5" / "digit-0101.png")
    shutil.move(folder / "pool" / "digit-0105.png", folder / "5" / "digit-0105.png")  # skipped

    out = ok(run(runner, "import", project, folder))

    assert out.startswith("5 images added (2 labeled from class folders), 168 duplicates")
    assert ("  1 images already in the project had no answer and got this import's; images"
            " with answers kept theirs\n") in out
    issues = {i["path"]: i["reason"] for i in query_issues(project, 3)}
    assert issues[str(folder / "5" / "digit-0101.png")] == (
        f"already in the project as {folder / 'pool' / 'digit-0101.png'}; it has answers,"
        " kept as they are")
    assert issues[str(folder / "6" / "digit-0150.png")] == (
        f"already in the project as {folder / 'pool' / 'digit-0150.png'}; it had no answer"
        " and got this import's (label)")
    after = query(project, "SELECT * FROM annotations ORDER BY id")
    assert after[: len(answers)] == answers  # every earlier answer, exactly as it was
    added = query(project, "SELECT i.rel_path, a.kind, a.source, c.name FROM annotations a"
                           " JOIN images i ON i.id = a.image_id LEFT JOIN classes c"
                           " ON c.id = a.class_id WHERE a.id > ?", [answers[-1][0]])
    assert sorted(added) == [("8/digit-0700.png", "label", "import", "8"),
                             ("8/digit-0701.png", "label", "import", "8"),
                             ("pool/digit-0150.png", "label", "import", "6")]
    found = states(project)
    assert found["pool/digit-0101.png"] == ("agreed", "4")  # ann's label stands
    assert found["pool/digit-0105.png"] == ("needs_votes", None)  # skipped: still hers to pass
    assert found["maybe/digit-0300.png"] == ("adjudicated", "2")


def test_a_label_file_later_labels_only_the_images_nobody_answered(tmp_path, runner,
                                                                   digits_project):
    folder = tmp_path / "first"
    add_user(Project.open(digits_project), "ann", "annotator", PASSWORDS["ann"])
    db = store.connect(digits_project / "activelabel.db")
    try:
        by_rel = image_ids(digits_project)
        one = next(c["id"] for c in store.classes(db) if c["name"] == "1")
        store.add_vote(db, store.get_user_by_name(db, "ann")["id"], by_rel["digit-0000.png"],
                       "label", one)
    finally:
        db.conn.close()
    answers = query(digits_project, "SELECT * FROM annotations ORDER BY id")
    labels = write_label_file(tmp_path / "labels.csv", [
        ("digit-0000.png", "0"), ("digit-0001.png", "1")], "csv")

    out = ok(run(runner, "import", digits_project, folder, "--labels", labels))

    assert out.startswith("0 images added (0 labeled from class folders), 40 duplicates")
    assert f"{folder / 'digit-0000.png'}: already in the project as" in out
    assert "; it has answers, kept as they are" in out
    assert "; it had no answer and got this import's (label)" in out
    after = query(digits_project, "SELECT * FROM annotations ORDER BY id")
    assert after[: len(answers)] == answers and len(after) == len(answers) + 1
    found = states(digits_project)
    assert found["digit-0000.png"] == ("agreed", "1")  # ann's answer, not the file's
    assert found["digit-0001.png"] == ("agreed", "1")


def test_a_project_from_before_this_import_report_still_shows_its_imports(tmp_path, runner,
                                                                          digits_project):
    """Runs recorded before migration 7 have no `understood`: the page shows no list."""
    db = store.connect(digits_project / "activelabel.db")
    try:
        with store.write(db):
            db.execute("UPDATE import_runs SET understood = NULL, warnings = NULL")
        run_row = store.import_run(db, 1)
    finally:
        db.conn.close()
    assert (run_row["understood"], run_row["warnings"]) == ({}, [])
    add_user(Project.open(digits_project), "admin", "admin", PASSWORDS["admin"])
    client = create_app(digits_project, {"TESTING": True}).test_client()
    login(client, "admin")
    page = client.get("/admin/imports/1").get_data(as_text=True)
    assert "40 added (0 labeled from class folders)" in page
    assert 'class="understood"' not in page
    assert (digits_project / CONFIG_NAME).exists()
