"""The `activelabel` command through click's CliRunner (and `serve` as a real process):
every command against a real project folder, passwords checked by logging in to the app."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import PASSWORDS, csrf_token, login, write_digits

from server import store
from server.app import create_app
from server.cli.main import main
from server.config import CONFIG_NAME, Project
from server.dataset.demo import read_oracle
from server.jobs.workers import stop_processes
from server.simulation.live_server import free_port

SERVE = [sys.executable, "-c", "from server.cli.main import main; main()", "serve"]


# ---------------------------------------------------------------- helpers


def run(runner, *args):
    return runner.invoke(main, [str(a) for a in args])


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def clean_error(result, message: str, code: int = 1) -> None:
    """A message for a person, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert message in result.stderr, result.stderr


def query(project_dir, sql: str) -> list[tuple]:
    db = store.connect(Path(project_dir) / "activelabel.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.conn.close()


def class_names(project_dir) -> list[str]:
    return [r[0] for r in query(project_dir, "SELECT name FROM classes ORDER BY position")]


def can_log_in(project_dir, name: str, password: str) -> bool:
    client = create_app(project_dir, {"TESTING": True}).test_client()
    token = csrf_token(client)
    response = client.post("/login", data={"name": name, "password": password, "csrf_token": token})
    return response.status_code == 302


def home_of(project_dir, name: str, password: str) -> str:
    """Where a user lands after logging in: /admin/ or /label."""
    client = create_app(project_dir, {"TESTING": True}).test_client()
    token = csrf_token(client)
    response = client.post("/login", data={"name": name, "password": password, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


@pytest.fixture
def sorted_images(tmp_path, digits):
    """60 real digits in a folder-per-class layout; returns (folder, {path: label})."""
    folder = tmp_path / "sorted"
    return folder, write_digits(folder, digits, 60, per_class=True)


@pytest.fixture
def sorted_project(runner, tmp_path, sorted_images):
    folder, truth = sorted_images
    ok(run(runner, "init", tmp_path / "p", "--images", folder, "--seed", 5))
    return tmp_path / "p", truth


# ---------------------------------------------------------------- init


def test_init_with_classes_from_the_option(runner, tmp_path, image_folder):
    out = ok(run(runner, "init", tmp_path / "p", "--images", image_folder,
                 "--classes", "cat,dog, bird", "--seed", 3, "--votes-per-image", 2))
    assert f"Created project {tmp_path / 'p'}" in out
    assert "40 images added (0 labeled from class folders)" in out
    project = Project.open(tmp_path / "p")
    assert (project.config.seed, project.config.votes_per_image) == (3, 2)
    assert project.config.images == str(image_folder.resolve())
    assert class_names(project.root) == ["cat", "dog", "bird"]
    assert query(project.root, "SELECT status, count(*) FROM image_state GROUP BY status") == [
        ("needs_votes", 40)
    ]


def test_init_takes_the_classes_from_sub_folders(runner, tmp_path, sorted_images, digits):
    folder, truth = sorted_images
    write_digits(folder, digits, 3, start=900)  # loose files at the top: imported unlabeled
    out = ok(run(runner, "init", tmp_path / "p", "--images", folder))
    assert "63 images added (60 labeled from class folders)" in out
    assert class_names(tmp_path / "p") == sorted(set(truth.values()))
    labeled = query(
        tmp_path / "p",
        "SELECT i.path, c.name FROM image_state s JOIN images i ON i.id = s.image_id"
        " JOIN classes c ON c.id = s.class_id WHERE s.status = 'agreed'",
    )
    assert dict(labeled) == truth


def test_init_without_classes_is_a_clean_error(runner, tmp_path, image_folder):
    clean_error(run(runner, "init", tmp_path / "p", "--images", image_folder),
                "no classes: pass --classes a,b,c")
    assert not (tmp_path / "p" / CONFIG_NAME).exists()


@pytest.mark.parametrize("where", [".", "inside", "inside/deeper"])
def test_init_inside_the_image_folder_is_refused(runner, image_folder, where):
    target = image_folder / where
    clean_error(run(runner, "init", target, "--images", image_folder, "--classes", "a,b"),
                "put the project folder outside the image folder")
    assert not (target / CONFIG_NAME).exists()


@pytest.mark.parametrize("classes", [["--classes", "a,b"], []])
def test_init_from_a_missing_image_folder_is_refused(runner, tmp_path, classes):
    clean_error(run(runner, "init", tmp_path / "p", "--images", tmp_path / "nowhere", *classes),
                f"{tmp_path / 'nowhere'} is not a folder")
    assert not (tmp_path / "p").exists()


def test_import_adds_a_folder_and_refuses_a_missing_one(runner, tmp_path, project, digits):
    write_digits(tmp_path / "more", digits, 3, start=200)
    out = ok(run(runner, "import", project.root, tmp_path / "more"))
    assert "3 images added (0 labeled from class folders)" in out
    assert query(project.root, "SELECT count(*) FROM images") == [(43,)]
    clean_error(run(runner, "import", project.root, tmp_path / "nowhere"), "is not a folder")
    assert query(project.root, "SELECT count(*) FROM images") == [(43,)]


def test_init_twice_is_refused_and_changes_nothing(runner, tmp_path, image_folder):
    ok(run(runner, "init", tmp_path / "p", "--images", image_folder, "--classes", "a,b"))
    before = Path(tmp_path / "p" / CONFIG_NAME).read_text()
    clean_error(run(runner, "init", tmp_path / "p", "--images", image_folder, "--classes", "x"),
                "is already an activelabel project")
    assert (tmp_path / "p" / CONFIG_NAME).read_text() == before
    assert class_names(tmp_path / "p") == ["a", "b"]
    assert query(tmp_path / "p", "SELECT count(*) FROM import_runs") == [(1,)]


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("cats,dogs/puppies", "cannot contain '/'"),
        ("cats,,dogs", "a class name cannot be empty"),
        ("..,cats", "class name '..' cannot contain"),
        ("cats,dogs, cats", "class names must be unique"),
    ],
)
def test_init_with_bad_class_names_is_refused(runner, tmp_path, image_folder, classes, message):
    clean_error(run(runner, "init", tmp_path / "p", "--images", image_folder, "--classes", classes),
                message)
    assert not (tmp_path / "p" / CONFIG_NAME).exists()


# ---------------------------------------------------------------- users


def test_user_add_prints_a_generated_password_that_logs_in(runner, project):
    out = ok(run(runner, "user", "add", project.root, "carol", "--role", "admin"))
    shown = re.fullmatch(r"Added admin carol; password: (\S+)\n", out)
    assert shown, out
    assert home_of(project.root, "carol", shown.group(1)) == "/admin/"
    assert not can_log_in(project.root, "carol", "wrong-password")


def test_user_add_takes_a_password(runner, project):
    out = ok(run(runner, "user", "add", project.root, "dave", "--password", "correct horse"))
    assert out == "Added annotator dave; password: correct horse\n"
    assert home_of(project.root, "dave", "correct horse") == "/label"


def test_user_add_mistakes_are_clean_errors(runner, project):
    clean_error(run(runner, "user", "add", project.root, "erin", "--password", "short"),
                "a password needs at least 8 characters")
    clean_error(run(runner, "user", "add", project.root, "ann", "--password", "long-enough"),
                "a user named 'ann' already exists")
    clean_error(run(runner, "user", "add", project.root, "erin", "--role", "owner"),
                "Invalid value for '--role'", code=2)
    names = ok(run(runner, "user", "list", project.root))
    assert "erin" not in names
    assert can_log_in(project.root, "ann", PASSWORDS["ann"])  # untouched


def test_user_list(runner, project):
    assert ok(run(runner, "user", "list", project.root)) == (
        "admin\tadmin\nann\tannotator\nbob\tannotator\n"
    )
    ok(run(runner, "user", "add", project.root, "aaron", "--password", "aaron-password"))
    assert ok(run(runner, "user", "list", project.root)).splitlines()[0] == "aaron\tannotator"


def test_commands_on_a_folder_that_is_not_a_project(runner, tmp_path):
    for folder in (tmp_path, tmp_path / "missing"):
        for args in (
            ["user", "list", folder],
            ["user", "add", folder, "x"],
            ["classes", folder],
            ["export", folder, tmp_path / "x.csv"],
            ["import", folder, tmp_path],
        ):
            clean_error(run(runner, *args), f"{folder} is not an activelabel project")


# ---------------------------------------------------------------- classes


def test_classes_lists_and_adds(runner, project):
    assert ok(run(runner, "classes", project.root)).split() == [str(d) for d in range(10)]
    out = ok(run(runner, "classes", project.root, "--add", "chat noir", "--add", "été",
                 "--add", "3"))  # '3' exists already: kept once, in its place
    assert out.splitlines() == [str(d) for d in range(10)] + ["chat noir", "été"]
    assert class_names(project.root) == out.splitlines()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cats/dogs", "cannot contain '/'"),
        ("back\\slash", "cannot contain '/', '\\'"),
        ("", "a class name cannot be empty"),
        ("   ", "a class name cannot be empty"),
        ("..", "class name '..' cannot contain"),
        ("tab\there", "control characters"),
        ("x" * 65, "is longer than 64 characters"),
    ],
)
def test_bad_class_names_are_clean_errors(runner, project, name, message):
    clean_error(run(runner, "classes", project.root, "--add", "fine", "--add", name), message)
    assert class_names(project.root) == [str(d) for d in range(10)]  # 'fine' was not added either


# ---------------------------------------------------------------- export


def test_export_csv_and_jsonl(runner, tmp_path, sorted_project):
    project_dir, truth = sorted_project
    out = ok(run(runner, "export", project_dir, tmp_path / "out" / "labels.csv", "--format", "csv"))
    assert out.startswith(f"Wrote 60 labeled images to {tmp_path / 'out' / 'labels.csv'} (train ")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "labels.csv").read_text("utf-8"))))
    assert {r["path"]: r["label"] for r in rows} == truth
    for row in rows:
        assert row["sha256"] == hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest()
        assert row["votes"] == "1"
    counts = Counter(r["split"] for r in rows)
    shown = f"(train {counts['train']}, val {counts['val']}, test {counts['test']})"
    assert out.strip().endswith(shown)

    ok(run(runner, "export", project_dir, tmp_path / "labels.jsonl", "--format", "jsonl"))
    lines = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text("utf-8").splitlines()]
    # The same split, the same facts (an empty CSV cell is JSON's null).
    assert [{k: "" if v is None else str(v) for k, v in x.items()} for x in lines] == rows


def test_export_imagefolder_as_zip_and_as_folder(runner, tmp_path, sorted_project):
    project_dir, truth = sorted_project
    ok(run(runner, "export", project_dir, tmp_path / "set.zip"))  # imagefolder is the default
    archive = zipfile.ZipFile(io.BytesIO((tmp_path / "set.zip").read_bytes()))
    assert archive.testzip() is None
    listed = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode("utf-8"))))
    assert {r["path"]: r["label"] for r in listed} == truth
    for row in listed:
        assert archive.read(row["file"]) == Path(row["path"]).read_bytes()
        assert row["file"].startswith(f"{row['split']}/{row['label']}/")

    ok(run(runner, "export", project_dir, tmp_path / "tree", "--format", "imagefolder"))
    tree = tmp_path / "tree"
    assert (tree / "labels.csv").read_bytes() == archive.read("labels.csv")
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.png"))
    assert files == sorted(r["file"] for r in listed)
    for row in listed:
        assert (tree / row["file"]).read_bytes() == Path(row["path"]).read_bytes()


def test_cli_and_web_give_the_same_split_for_a_seed(runner, tmp_path, sorted_project):
    project_dir, _truth = sorted_project
    ok(run(runner, "export", project_dir, tmp_path / "a.csv", "--format", "csv", "--seed", 9))
    ok(run(runner, "export", project_dir, tmp_path / "b.csv", "--format", "csv", "--seed", 9))
    ok(run(runner, "export", project_dir, tmp_path / "c.csv", "--format", "csv", "--seed", 10))
    ok(run(runner, "export", project_dir, tmp_path / "d.csv", "--format", "csv"))
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()

    ok(run(runner, "user", "add", project_dir, "admin", "--role", "admin",
           "--password", PASSWORDS["admin"]))
    client = create_app(project_dir, {"TESTING": True}).test_client()
    login(client, "admin")
    for seed, name in ((9, "a.csv"), (5, "d.csv")):  # 5: the project's seed, the default
        web = client.get(f"/export?format=csv&seed={seed}").get_data()
        assert web == (tmp_path / name).read_bytes()


def test_export_mistakes_are_clean_errors(runner, tmp_path, sorted_project):
    project_dir, _truth = sorted_project
    target = tmp_path / "x.csv"
    for args, message in (
        (("--format", "xml"), "unknown format 'xml'; use one of imagefolder, csv, jsonl"),
        (("--split", "0.5"), "split parts must sum to 1"),
        (("--split", "0.5,x"), "should be non-negative numbers like 0.8,0.1,0.1"),
        (("--split", "0.4,0.3,0.2,0.1"), "split takes one to three parts"),
        (("--seed", "abc"), "seed must be a whole number"),
    ):
        clean_error(run(runner, "export", project_dir, target, "--format", "csv", *args), message)
        assert not target.exists()

    target.write_text("earlier work")
    clean_error(run(runner, "export", project_dir, target, "--format", "csv"), "already exists")
    assert target.read_text() == "earlier work"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("keep")
    clean_error(run(runner, "export", project_dir, tmp_path / "full"),
                "is a folder that is not empty")


def test_export_lists_missing_originals(runner, tmp_path, sorted_project):
    project_dir, truth = sorted_project
    gone = sorted(truth)[0]
    Path(gone).unlink()
    result = run(runner, "export", project_dir, tmp_path / "tree")
    assert ok(result).startswith("Wrote 59 labeled images")
    assert "Left out 1 images whose file is missing" in result.stderr
    assert (tmp_path / "tree" / "MISSING.txt").read_text().splitlines() == [
        f"{gone}\t{truth[gone]}\tmissing"
    ]
    assert len(list((tmp_path / "tree").rglob("*.png"))) == 59


# ---------------------------------------------------------------- demo


def demo_logins(output: str) -> dict[str, str]:
    found = re.findall(r"^\s+\w+\s+user '(\w+)'\s+password (\S+)$", output, re.MULTILINE)
    return dict(found)


def test_demo_builds_the_digits_project_and_reuses_it(runner, tmp_path, digits):
    folder = tmp_path / "demo"
    out = ok(run(runner, "demo", folder, "--no-serve"))
    total = len(digits.target)
    assert total == 1797
    images = tmp_path / "demo-images"
    oracle = tmp_path / "demo-oracle.csv"
    assert f"Wrote {total} digit images to {images}" in out
    assert f"{total} images added (0 labeled from class folders)" in out

    # The project: every digit, classes 0-9, nothing labeled.
    assert class_names(folder) == [str(d) for d in range(10)]
    assert query(folder, "SELECT count(*) FROM images") == [(total,)]
    assert query(folder, "SELECT count(*) FROM annotations") == [(0,)]
    assert query(folder, "SELECT status, count(*) FROM image_state GROUP BY status") == [
        ("needs_votes", total)
    ]
    paths = {Path(p) for (p,) in query(folder, "SELECT path FROM images")}
    assert {p.parent for p in paths} == {images}

    # The oracle: beside the project, out of the image folder, the true digit of every file.
    assert oracle.is_file() and not oracle.resolve().is_relative_to(images.resolve())
    assert list(images.glob("*.csv")) == []
    truth = read_oracle(oracle)
    assert truth == {f"digit-{i:04d}.png": str(int(t)) for i, t in enumerate(digits.target)}
    assert {p.name for p in paths} == set(truth)

    # Before serving, a cold-start round ordered the queue: the first cards are the most
    # typical digit of each cluster, and they cover more digits than the import's shuffle.
    assert "cold start (no labels yet)" in out
    assert "input 128 px, from the images' typical side 64 px, raised to the minimum 128" in out
    assert query(folder, "SELECT mode, status FROM rounds") == [("cold start", "done")]
    first = [name for (name,) in query(
        folder, "SELECT i.rel_path FROM queue q JOIN images i ON i.id = q.image_id"
        " ORDER BY q.priority LIMIT 20")]
    shuffled = [name for (name,) in query(
        folder, "SELECT rel_path FROM images ORDER BY shuffle_key LIMIT 20")]
    assert len({truth[f] for f in first}) > len({truth[f] for f in shuffled})
    assert len({truth[f] for f in first}) >= 9

    logins = demo_logins(out)
    assert set(logins) == {"admin", "annotator"}
    assert home_of(folder, "admin", logins["admin"]) == "/admin/"
    assert home_of(folder, "annotator", logins["annotator"]) == "/label"

    again = ok(run(runner, "demo", folder, "--no-serve"))
    assert "cold start" not in again  # the project exists: its queue is left as it is
    assert f"Using the existing demo project {folder}" in again
    new = demo_logins(again)
    assert set(new) == {"admin", "annotator"}
    for name in new:
        assert new[name] != logins[name]
        assert can_log_in(folder, name, new[name])
        assert not can_log_in(folder, name, logins[name])
    assert query(folder, "SELECT count(*) FROM images") == [(total,)]
    assert query(folder, "SELECT count(*) FROM import_runs") == [(1,)]


def test_demo_rerun_adds_a_demo_user_that_is_missing(runner, tmp_path, image_folder):
    """A first run stopped between the import and the logins leaves a project without its
    users: the next run adds them instead of failing."""
    folder = tmp_path / "demo"
    ok(run(runner, "init", folder, "--images", image_folder, "--classes", "0,1"))
    logins = demo_logins(ok(run(runner, "demo", folder, "--no-serve")))
    assert set(logins) == {"admin", "annotator"}
    assert home_of(folder, "admin", logins["admin"]) == "/admin/"
    assert home_of(folder, "annotator", logins["annotator"]) == "/label"


# ---------------------------------------------------------------- serve


def get_when_up(url: str, process: subprocess.Popen, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return urllib.request.urlopen(url, timeout=5)
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_serve_runs_waitress(project, tmp_path):
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen([*SERVE, str(project.root), "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        with get_when_up(f"http://127.0.0.1:{port}/login", process) as response:
            assert response.status == 200
            assert response.headers["Server"] == "waitress"
            assert 'name="password"' in response.read().decode("utf-8")
    finally:
        stop_processes(process, timeout=10)
        log.close()
    log_text = (tmp_path / "serve.log").read_text()
    assert f"Serving {project.root} at http://127.0.0.1:{port}/" in log_text


def test_serve_on_a_port_in_use_is_a_clean_error(project):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*SERVE, str(project.root), "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "Address already in use" in done.stderr


def test_serve_refuses_what_is_not_a_project(runner, tmp_path):
    clean_error(run(runner, "serve", tmp_path, "--port", 8123), "is not an activelabel project")
    clean_error(run(runner, "serve", tmp_path, "--port", 0), "Invalid value for '--port'", code=2)
