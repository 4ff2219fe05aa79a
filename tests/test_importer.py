"""The image import end to end: real files on disk (scikit-learn's digits and files written
with Pillow), a real project (SQLite), the report read back from the store, the admin pages
and the `activelabel` command. Nothing is mocked."""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, PASSWORDS, login, write_digits
from PIL import Image
from test_imaging import FILES, damaged_exif, exif_with, gradient, png_header_only

from server import store
from server.app import create_app
from server.cli.main import main
from server.dataset.importer import PARALLEL_FROM, ImportFailed, import_folder
from server.projects import add_user, import_images, init_project

# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
def open_db():
    """open_db(project) -> a store connection, closed after the test."""
    opened = []

    def make(project):
        db = store.connect(project.db_path)
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.conn.close()


def rows(db, sql: str, params=()) -> list[dict]:
    return list(db.query(sql, list(params)))


def noise_png(path: Path, seed: int, side: int = 8) -> Path:
    """A small PNG whose content is unique to seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def truncated(path: Path, source: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def by_path(issues: list[dict]) -> dict[str, tuple[str, str]]:
    return {i["path"]: (i["kind"], i["reason"]) for i in issues}


@contextlib.contextmanager
def fifo_writer(fifo: Path) -> Iterator[None]:
    """Opening a FIFO for reading waits for a writer. Should the import ever do that, this
    thread comes along as the writer, so the test fails instead of hanging."""
    done = threading.Event()

    def write() -> None:
        while not done.wait(0.05):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader, as it should be
                continue
            os.close(fd)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@pytest.fixture
def mixed_folder(tmp_path, digits) -> Path:
    """10 real digits beside one of every kind of file the import must step over."""
    folder = tmp_path / "mixed"
    write_digits(folder, digits, 10)
    (folder / "empty.png").write_bytes(b"")
    truncated(folder / "cut.png", folder / "digit-0000.png")
    with Image.open(folder / "digit-0001.png") as digit:
        digit.convert("RGB").save(tmp_path / "whole.jpg")
    truncated(folder / "cut.jpg", tmp_path / "whole.jpg")
    (folder / "letter.jpg").write_text("Dear annotator,\n", encoding="utf-8")
    for name in ("notes.txt", "labels.csv", ".DS_Store", ".hidden.png"):
        (folder / name).write_bytes(b"x")
    noise_png(folder / ".thumbnails" / "t.png", seed=1)  # hidden folder: never entered
    noise_png(tmp_path / "elsewhere" / "secret.png", seed=2)
    (folder / "outside.png").symlink_to(tmp_path / "elsewhere" / "secret.png")
    (folder / "dangling.png").symlink_to(folder / "deleted.png")
    (folder / "loop-a.png").symlink_to(folder / "loop-b.png")
    (folder / "loop-b.png").symlink_to(folder / "loop-a.png")
    os.mkfifo(folder / "pipe.png")
    return folder


MIXED_REASONS = {
    "empty.png": "empty file (0 bytes)",
    "letter.jpg": "not a recognised image file",
    "outside.png": "link points outside the image folder",
    "dangling.png": "broken link (its target does not exist)",
    "loop-a.png": "link cannot be followed (a loop, or a target that cannot be read)",
    "loop-b.png": "link cannot be followed (a loop, or a target that cannot be read)",
    "pipe.png": "not a regular file",
}


# --- what is imported, what is skipped and why ----------------------------------------------


def test_bad_files_are_skipped_with_reasons_and_never_stop_the_import(
    tmp_path, mixed_folder, open_db
):
    with fifo_writer(mixed_folder / "pipe.png"):
        project, report = init_project(tmp_path / "project", mixed_folder, CLASSES)

    # found: the files handed to Pillow (links that cannot be followed are refused before)
    assert report.added == 10 and report.found == 10 + 5
    assert report.ignored == 4  # notes.txt, labels.csv, .DS_Store, .hidden.png
    issues = by_path(report.issues)
    for name, reason in MIXED_REASONS.items():
        assert issues.pop(str(mixed_folder / name)) == ("skipped", reason), name
    for name in ("cut.png", "cut.jpg"):
        kind, reason = issues.pop(str(mixed_folder / name))
        assert kind == "skipped" and reason.startswith("corrupt or truncated image"), reason
    assert issues == {}
    assert report.summary() == (
        "10 images added (0 labeled from class folders), 0 duplicates, 9 skipped,"
        " 4 other files ignored"
    )

    db = open_db(project)
    stored = rows(db, "SELECT rel_path FROM images ORDER BY rel_path")
    assert [r["rel_path"] for r in stored] == [f"digit-{i:04d}.png" for i in range(10)]
    assert store.import_issues(db, report.import_id) == report.issues
    run = store.import_run(db, report.import_id)
    assert run["source"] == str(mixed_folder)
    assert run["finished_at"] is not None
    assert (run["added"], run["labeled"], run["duplicates"], run["skipped"], run["ignored"]) == (
        10, 0, 0, 9, 4
    )


def test_every_format_and_mode_is_imported(tmp_path, open_db):
    folder = tmp_path / "formats"
    folder.mkdir()
    for name, (writer, *_rest) in FILES.items():
        writer(folder / name)
    frames = [Image.new("RGB", (12, 10), c) for c in ((0, 90, 0), (90, 0, 0))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(gradient(40, 20)).save(folder / "turned.jpg", exif=exif_with(6))
    Image.fromarray(gradient(40, 20)).save(folder / "odd-exif.jpg", exif=damaged_exif(6))

    project, report = init_project(tmp_path / "project", folder, ["a", "b"])

    assert report.issues == [] and report.added == len(FILES) + 3
    db = open_db(project)
    stored = {r["rel_path"]: r for r in rows(db, "SELECT * FROM images")}
    for name, (_writer, fmt, mode, _pixel) in FILES.items():
        row = stored[name]
        assert (row["format"], row["mode"], row["width"], row["height"]) == (fmt, mode, 12, 10)
        assert row["bytes"] == (folder / name).stat().st_size
        assert row["path"] == str(folder / name)
        assert len(row["sha256"]) == 64
    assert (stored["anim.gif"]["format"], stored["anim.gif"]["mode"]) == ("GIF", "P")
    for name in ("turned.jpg", "odd-exif.jpg"):  # orientation 6: stored upright, turned
        assert (stored[name]["width"], stored[name]["height"]) == (20, 40), name


def test_pixel_limit_refuses_bombs_but_keeps_importing(tmp_path, project, open_db):
    folder = tmp_path / "bombs"
    folder.mkdir()
    Image.new("L", (100, 60), 128).save(folder / "large.png")
    Image.new("L", (50, 50), 128).save(folder / "fine.png")
    (folder / "bomb.png").write_bytes(png_header_only(20_000, 20_000))
    db = open_db(project)

    report = import_folder(db, folder, seed=0, votes_needed=1, max_pixels=5_000)

    assert report.added == 1
    issues = by_path(report.issues)
    assert issues[str(folder / "large.png")] == (
        "skipped", "too many pixels: 100x60 = 6,000 (limit 5,000)"
    )
    kind, reason = issues[str(folder / "bomb.png")]
    assert kind == "skipped" and reason.startswith("too many pixels"), reason
    assert rows(db, "SELECT rel_path FROM images WHERE import_id = ?", [report.import_id]) == [
        {"rel_path": "fine.png"}
    ]


def test_hidden_files_folders_and_other_extensions_are_ignored(tmp_path, digits, open_db):
    folder = tmp_path / "images"
    write_digits(folder, digits, 3)
    write_digits(folder / ".git", digits, 3, start=3)
    write_digits(folder / "0" / ".cache", digits, 3, start=6)
    for name in (".hidden.png", "README.md", "x.svg", "raw.CR2", "photo.png.bak"):
        (folder / name).write_bytes(b"data")
    noise_png(folder / "UPPER.PNG", seed=3)  # extensions match in any case
    shutil.copy(folder / "UPPER.PNG", folder / "also.JpEg")

    project, report = init_project(tmp_path / "project", folder, CLASSES)

    assert report.ignored == 5
    db = open_db(project)
    assert sorted(r["rel_path"] for r in rows(db, "SELECT rel_path FROM images")) == [
        "UPPER.PNG", "digit-0000.png", "digit-0001.png", "digit-0002.png"
    ]
    # also.JpEg holds the same bytes as UPPER.PNG: found, checked, reported as a duplicate
    assert by_path(report.issues)[str(folder / "also.JpEg")][0] == "duplicate"


def test_links_inside_the_folder_are_followed_and_outside_skipped(tmp_path, open_db):
    folder = tmp_path / "images"
    noise_png(folder / ".store" / "kept.png", seed=10)  # reachable only through the link
    noise_png(folder / "a" / "real.png", seed=11)
    noise_png(tmp_path / "outside" / "o.png", seed=12)
    (folder / "link-in.png").symlink_to(folder / ".store" / "kept.png")
    (folder / "relative.png").symlink_to(Path("a") / "real.png")
    (folder / "link-out.png").symlink_to(tmp_path / "outside" / "o.png")
    (folder / "via-parent.png").symlink_to(Path("..") / "outside" / "o.png")
    (folder / "linked-dir").symlink_to(folder / "a", target_is_directory=True)
    (folder / "out-dir").symlink_to(tmp_path / "outside", target_is_directory=True)

    project, report = init_project(tmp_path / "project", folder, ["a"])

    db = open_db(project)
    stored = {r["rel_path"]: r["path"] for r in rows(db, "SELECT rel_path, path FROM images")}
    # the top level is walked before sub-folders, so the link is met first; a/real.png is then
    # the same content again
    assert stored == {"relative.png": str(folder / "relative.png"),
                      "link-in.png": str(folder / "link-in.png")}
    assert by_path(report.issues) == {
        str(folder / "linked-dir"): (
            "skipped", "linked folder not followed (its images are reached directly)"
        ),
        str(folder / "out-dir"): ("skipped", "link points outside the image folder"),
        str(folder / "link-out.png"): ("skipped", "link points outside the image folder"),
        str(folder / "via-parent.png"): ("skipped", "link points outside the image folder"),
        str(folder / "a" / "real.png"): (
            "duplicate", f"same content as {folder / 'relative.png'}"
        ),
    }


def test_unreadable_file_is_skipped(tmp_path, digits, open_db):
    """As root, chmod cannot make a file unreadable; a link to a file that is gone can."""
    folder = tmp_path / "images"
    write_digits(folder, digits, 2)
    shutil.copy(folder / "digit-0000.png", tmp_path / "moved.png")
    (folder / "was-here.png").symlink_to(tmp_path / "moved.png")
    (tmp_path / "moved.png").unlink()

    _project, report = init_project(tmp_path / "project", folder, CLASSES)

    assert report.added == 2
    assert by_path(report.issues) == {
        str(folder / "was-here.png"): ("skipped", "broken link (its target does not exist)")
    }


def test_file_names_that_are_not_utf8_are_skipped_not_fatal(tmp_path, digits, open_db):
    folder = tmp_path / "images"
    write_digits(folder, digits, 2)
    raw = os.fsencode(folder)
    noise_png(Path(os.fsdecode(raw + b"/caf\xe9.png")), seed=20)  # Latin-1 bytes
    noise_png(Path(os.fsdecode(raw + b"/d\xe9j\xe0/x.png")), seed=21)

    project, report = init_project(tmp_path / "project", folder, CLASSES)

    assert report.added == 2
    assert by_path(report.issues) == {
        f"{folder}/caf\ufffd.png": ("skipped", "file name is not valid UTF-8; rename it"),
        f"{folder}/d\ufffdj\ufffd": ("skipped", "folder name is not valid UTF-8; rename it"),
    }
    assert len(store.import_issues(open_db(project), report.import_id)) == 2


def test_class_folders_skip_names_that_are_not_utf8(tmp_path, digits, open_db):
    folder = tmp_path / "images"
    write_digits(folder / "cat", digits, 1)
    write_digits(Path(os.fsdecode(os.fsencode(folder) + b"/d\xf6g")), digits, 1, start=1)

    project, report = init_project(tmp_path / "project", folder)  # classes from the folders

    assert [c["name"] for c in store.classes(open_db(project))] == ["cat"]
    assert (report.added, report.labeled) == (1, 1)
    assert [i["reason"] for i in report.issues] == ["folder name is not valid UTF-8; rename it"]


def test_an_image_folder_whose_path_is_not_utf8_fails_cleanly(tmp_path, digits, project):
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/bilder-\xe4"))
    write_digits(folder, digits, 1)
    with pytest.raises(ImportFailed, match="not valid UTF-8"):
        import_images(project, folder)


def test_unicode_and_spaces_in_names_import_label_and_serve(tmp_path, open_db):
    folder = tmp_path / "Bilder mit Ümlaut"
    names = {
        "café/ 猫 photo (1).png": "café",
        "日本 語/x y.jpeg": "日本 語",
        "Übersicht — draft #2.PNG": None,
        "emoji 🙂/a.png": None,  # not a class: unlabeled
    }
    for seed, name in enumerate(names):
        path = folder / name
        noise_png(path, seed=30 + seed)
        if path.suffix.lower() == ".jpeg":
            with Image.open(path) as png:
                png.load()
                png.save(path, format="JPEG")
    project, report = init_project(tmp_path / "projekt ünï", folder, ["café", "日本 語"])
    add_user(project, "admin", "admin", PASSWORDS["admin"])

    assert report.issues == [] and report.added == 4 and report.labeled == 2
    assert report.unmatched_folders == ["emoji 🙂"]
    db = open_db(project)
    class_names = {c["id"]: c["name"] for c in store.classes(db)}
    stored = rows(db, "SELECT i.id, i.rel_path, i.path, s.class_id FROM images i"
                      " JOIN image_state s ON s.image_id = i.id")
    assert {r["rel_path"]: class_names.get(r["class_id"]) for r in stored} == names
    assert {r["path"] for r in stored} == {str(folder / n) for n in names}

    client = create_app(project.root, {"TESTING": True}).test_client()
    login(client, "admin")
    for row in stored:
        response = client.get(f"/images/{row['id']}")
        assert response.status_code == 200, row["rel_path"]
        assert response.mimetype == "image/jpeg" and response.get_data()[:2] == b"\xff\xd8"
        response.close()  # send_file keeps the cached copy open until then


# --- duplicates -----------------------------------------------------------------------------


def test_same_content_twice_in_one_import_gives_one_image(tmp_path, digits, open_db):
    folder = tmp_path / "images"
    write_digits(folder, digits, 3)
    shutil.copy(folder / "digit-0001.png", folder / "zz copy of one.png")
    (folder / "sub").mkdir()
    shutil.copy(folder / "digit-0001.png", folder / "sub" / "again.png")

    project, report = init_project(tmp_path / "project", folder, CLASSES)

    assert report.added == 3
    first = str(folder / "digit-0001.png")
    assert by_path(report.issues) == {
        str(folder / "zz copy of one.png"): ("duplicate", f"same content as {first}"),
        str(folder / "sub" / "again.png"): ("duplicate", f"same content as {first}"),
    }
    assert "2 duplicates" in report.summary()
    db = open_db(project)
    assert store.image_count(db) == 3
    assert store.import_run(db, report.import_id)["duplicates"] == 2


def test_same_content_across_imports_gives_one_image(tmp_path, digits, open_db):
    first_folder, second_folder = tmp_path / "first", tmp_path / "second"
    write_digits(first_folder, digits, 5)
    write_digits(second_folder, digits, 4, start=3)  # digits 3 and 4 are in both
    project, first = init_project(tmp_path / "project", first_folder, CLASSES)

    second = import_images(project, second_folder)

    assert (first.added, second.added) == (5, 2)
    assert by_path(second.issues) == {
        str(second_folder / f"digit-{i:04d}.png"): (
            "duplicate", f"already in the project as {first_folder / f'digit-{i:04d}.png'}"
        )
        for i in (3, 4)
    }
    again = import_images(project, first_folder)
    assert again.added == 0 and len(again.duplicates) == 5 and again.skipped == []
    db = open_db(project)
    assert store.image_count(db) == 7
    assert [r["duplicates"] for r in store.import_runs(db)] == [5, 2, 0]  # newest first
    assert store.import_issues(db, again.import_id) == again.issues


# --- labels from class folders --------------------------------------------------------------


def test_folder_per_class_gives_labels_from_the_import(tmp_path, digits, open_db):
    folder = tmp_path / "images"
    truth = write_digits(folder, digits, 30, per_class=True)
    nested = noise_png(folder / "3" / "more" / "deep.png", seed=40)
    truth[str(nested)] = "3"
    loose = write_digits(folder, digits, 2, start=100)  # top level: unlabeled

    project, report = init_project(tmp_path / "project", folder)  # classes from the folders

    db = open_db(project)
    assert [c["name"] for c in store.classes(db)] == sorted({*truth.values()})
    assert (report.added, report.labeled, report.unmatched_folders) == (33, 31, [])
    class_names = {c["id"]: c["name"] for c in store.classes(db)}
    for path, label in truth.items():
        image = rows(db, "SELECT id FROM images WHERE path = ?", [path])[0]
        state = store.state_of(db, image["id"])
        assert (state["status"], class_names[state["class_id"]], state["votes"]) == (
            "agreed", label, 1
        )
        notes = rows(db, "SELECT kind, class_id, source, user_id FROM annotations"
                         " WHERE image_id = ?", [image["id"]])
        assert notes == [{"kind": "label", "class_id": state["class_id"], "source": "import",
                          "user_id": None}]
    for path in loose:
        image = rows(db, "SELECT id FROM images WHERE path = ?", [path])[0]
        assert store.state_of(db, image["id"])["status"] == "needs_votes"
    queued = rows(db, "SELECT i.path FROM queue q JOIN images i ON i.id = q.image_id")
    assert {r["path"] for r in queued} == set(loose)  # one vote each: labeled ones are done
    assert store.import_run(db, report.import_id)["labeled"] == 31


def test_a_folder_not_named_like_a_class_imports_unlabeled(tmp_path, digits, open_db):
    folder = tmp_path / "images"
    write_digits(folder, digits, 10, per_class=True)
    write_digits(folder / "misc", digits, 2, start=200)
    write_digits(folder / "to sort", digits, 1, start=300)

    project, report = init_project(tmp_path / "project", folder, CLASSES, votes_per_image=2)

    assert (report.added, report.labeled) == (13, 10)
    assert report.unmatched_folders == ["misc", "to sort"]
    assert report.summary().endswith(
        "; folders that are not classes (imported unlabeled): misc, to sort"
    )
    db = open_db(project)
    states = rows(db, "SELECT i.rel_path, s.status FROM images i"
                      " JOIN image_state s ON s.image_id = i.id WHERE s.votes = 0")
    assert sorted(r["rel_path"] for r in states) == [
        "misc/digit-0200.png", "misc/digit-0201.png", "to sort/digit-0300.png"
    ]
    # two votes per image: the import's label is one, so every image stays in the queue
    assert rows(db, "SELECT count(*) AS n FROM queue") == [{"n": 13}]


# --- callbacks and the parallel path --------------------------------------------------------


def test_progress_counts_every_checked_file(tmp_path, mixed_folder):
    started, steps = [], []
    with fifo_writer(mixed_folder / "pipe.png"):
        _project, report = init_project(
            tmp_path / "project", mixed_folder, CLASSES, on_start=started.append,
            progress=steps.append,
        )
    assert started == [report.found] and sum(steps) == report.found


def test_worker_processes_give_the_same_import(tmp_path, digits, open_db):
    folder = tmp_path / "images"
    write_digits(folder, digits, 40, per_class=True)
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    shutil.copy(folder / "3" / "digit-0003.png", folder / "copy.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    results = {}
    for workers in (1, 2):
        project, _ = init_project(tmp_path / f"project-{workers}", empty, CLASSES)
        db = open_db(project)
        report = import_folder(db, folder, seed=1, votes_needed=1, max_pixels=10**6,
                               workers=workers, parallel_from=10)
        results[workers] = (
            report.issues,
            rows(db, "SELECT rel_path, sha256, width, height, format, mode, bytes, shuffle_key"
                     " FROM images WHERE import_id = ? ORDER BY id", [report.import_id]),
        )
    assert results[1] == results[2]
    issues, images = results[2]
    assert len(images) == 40 and sorted(i["kind"] for i in issues) == ["duplicate", "skipped"]
    assert PARALLEL_FROM > 10  # the default would not have used the workers here


# --- failures of the whole import -----------------------------------------------------------


def test_a_missing_folder_fails_the_import_cleanly(tmp_path, project):
    with pytest.raises(ImportFailed, match="is not a folder"):
        import_images(project, tmp_path / "no such folder")


# --- the admin pages ------------------------------------------------------------------------


def test_admin_sees_the_import_report(tmp_path, project, client, mixed_folder):
    with fifo_writer(mixed_folder / "pipe.png"):
        report = import_images(project, mixed_folder)
    login(client, "admin")

    admin = client.get("/admin/")
    assert admin.status_code == 200
    link = f"/admin/imports/{report.import_id}"
    assert f'href="{link}"' in admin.get_data(as_text=True)

    page = client.get(link)
    assert page.status_code == 200
    text = html.unescape(page.get_data(as_text=True))
    assert str(mixed_folder) in text
    # the project fixture already holds digits 0-39, so the mixed folder's 10 are duplicates
    assert "0 added (0 labeled from class folders), 10 duplicates, 9 skipped, 4 other" in text
    assert f"{mixed_folder / 'digit-0000.png'}</code></td><td>duplicate</td>" in text
    for name, reason in MIXED_REASONS.items():
        assert re.search(
            rf"{re.escape(str(mixed_folder / name))}</code></td><td>skipped</td>"
            rf"<td>{re.escape(reason)}</td>", text
        ), name
    assert client.get("/admin/imports/999").status_code == 404


def test_annotators_cannot_see_import_reports(project, as_user):
    client, _token = as_user("ann")
    assert client.get("/admin/imports/1").status_code in (302, 403)


# --- the command line -----------------------------------------------------------------------


def test_cli_init_prints_the_report(tmp_path, runner, mixed_folder):
    with fifo_writer(mixed_folder / "pipe.png"):
        result = runner.invoke(
            main, ["init", str(tmp_path / "cli"), "--images", str(mixed_folder),
                   "--classes", ",".join(CLASSES)],
        )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Created project {tmp_path / 'cli'}" in out
    assert ("10 images added (0 labeled from class folders), 0 duplicates, 9 skipped,"
            " 4 other files ignored\n") in out
    for name, reason in MIXED_REASONS.items():
        assert f"  skipped: {mixed_folder / name}: {reason}\n" in out
    assert "Importing" in result.stderr  # the progress bar's label
    assert "Traceback" not in result.output


def test_cli_import_reports_duplicates_and_trims_long_reports(tmp_path, runner, digits):
    folder = tmp_path / "images"
    write_digits(folder, digits, 25, per_class=True)
    project = tmp_path / "cli"
    first = runner.invoke(main, ["init", str(project), "--images", str(folder)])
    assert first.exit_code == 0, first.output
    assert "25 images added (25 labeled from class folders)" in first.stdout

    again = runner.invoke(main, ["import", str(project), str(folder)])

    assert again.exit_code == 0, again.output
    lines = again.stdout.splitlines()
    assert lines[0] == (
        "0 images added (0 labeled from class folders), 25 duplicates, 0 skipped,"
        " 0 other files ignored"
    )
    # what the folder means is told again, though nothing is new
    assert lines[1].startswith("  10 classes: 0 (3), 1 (3), 2 (3)")
    duplicates = [line for line in lines if line.startswith("  duplicate: ")]
    assert len(duplicates) == 20 and lines[2] == duplicates[0]
    assert all("already in the project as" in line
               and line.endswith("; it has answers, kept as they are") for line in duplicates)
    assert lines[-1] == "  ... and 5 more (see the admin page)"


def test_cli_names_folders_that_are_not_classes(tmp_path, runner, digits):
    folder = tmp_path / "images"
    write_digits(folder / "misc", digits, 2)
    write_digits(folder / "unsorted", digits, 1, start=2)  # a pool by its name: no note
    result = runner.invoke(
        main, ["init", str(tmp_path / "cli"), "--images", str(folder), "--classes", "cat,dog"]
    )
    assert result.exit_code == 0, result.output
    assert "folders that are not classes (imported unlabeled): misc\n" in result.stdout
    assert "  3 unlabeled (in misc/, unsorted/)\n" in result.stdout


def test_cli_reports_names_that_are_not_utf8(tmp_path, runner, digits):
    folder = tmp_path / "images"
    write_digits(folder, digits, 1)
    noise_png(Path(os.fsdecode(os.fsencode(folder) + b"/\xff.png")), seed=60)
    result = runner.invoke(
        main, ["init", str(tmp_path / "cli"), "--images", str(folder), "--classes", "a"]
    )
    assert result.exit_code == 0, result.output
    assert f"  skipped: {folder}/\ufffd.png: file name is not valid UTF-8; rename it" in (
        result.stdout
    )


def _clean_error(result) -> str:
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    return result.stderr


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_cli_bad_images_folder_is_a_clean_error(tmp_path, runner, kind):
    images = tmp_path / "nope"
    if kind == "a file":
        images.write_text("not a folder")
    result = runner.invoke(main, ["init", str(tmp_path / "cli"), "--images", str(images)])
    assert str(images) in _clean_error(result)
    assert not (tmp_path / "cli").exists()


def test_cli_bad_images_folder_exits_with_status_1(tmp_path, runner):
    result = runner.invoke(main, ["init", str(tmp_path / "cli"), "--images", str(tmp_path / "x")])
    assert result.exit_code == 1


def test_cli_no_classes_is_a_clean_error(tmp_path, runner, image_folder):
    result = runner.invoke(main, ["init", str(tmp_path / "cli"), "--images", str(image_folder)])
    assert result.exit_code == 1
    message = _clean_error(result)
    assert message.startswith("Error: no classes: pass --classes a,b,c")
    assert not (tmp_path / "cli").exists()


def test_cli_project_inside_the_image_folder_is_a_clean_error(tmp_path, runner, image_folder):
    """Else the project's own cache would be imported as images the next time."""
    result = runner.invoke(
        main, ["init", str(image_folder / "project"), "--images", str(image_folder),
               "--classes", "a"],
    )
    assert result.exit_code == 1
    assert "put the project folder outside the image folder" in _clean_error(result)
    assert not (image_folder / "project").exists()


def test_cli_import_into_a_folder_that_is_not_a_project(tmp_path, runner, image_folder):
    result = runner.invoke(main, ["import", str(image_folder), str(image_folder)])
    assert result.exit_code == 1
    assert "is not an activelabel project" in _clean_error(result)
