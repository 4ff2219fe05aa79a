"""Hostile input not covered by test_auth, test_labeling and test_importer: replayed and
malformed posts, every post without its CSRF token, markup in names on the pages not
checked yet, oversized bodies, and export paths that try to leave the zip."""

from __future__ import annotations

import io
import posixpath
import re
import zipfile

import numpy as np
import pytest
from conftest import CLASSES, card_images, csrf_token, htmx_headers, login
from werkzeug.datastructures import MultiDict

from server import store
from server.dataset.demo import digit_image
from server.projects import import_images, init_project
from server.store import job_rows
from server.store import rounds as round_store

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def db(project):
    connection = store.connect(project.db_path)
    yield connection
    connection.conn.close()


def snapshot(db) -> dict:
    """Everything a hostile request could have changed."""
    return {
        table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        for table in ("annotations", "image_state", "users", "classes", "rounds", "images")
    }


# --- replays ------------------------------------------------------------------------------


def test_replaying_logout_and_login_posts_is_harmless(app, db):
    client = app.test_client()
    token = csrf_token(client)
    form = {"name": "ann", "password": "ann-password", "csrf_token": token}
    assert client.post("/login", data=form).status_code == 302
    assert client.post("/login", data=form).status_code == 302  # a second login: same user
    token = csrf_token(client, "/label")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    replay = client.post("/logout", data={"csrf_token": token})
    assert replay.status_code in (302, 400)  # logged out either way, nothing else happens
    assert client.get("/label").status_code == 302
    # An answer replayed after logout writes nothing.
    answered = client.post("/label/1", data={"choice": "1"}, headers=htmx_headers(token))
    assert answered.status_code in (400, 401)
    assert db.execute("SELECT count(*) FROM annotations").fetchone()[0] == 0


def test_an_answer_replayed_in_another_session_of_the_same_user_counts_once(app, db):
    first_tab = app.test_client()
    token_a = login(first_tab, "ann")
    image = card_images(first_tab.get("/label").get_data(as_text=True))[0]
    second_tab = app.test_client()
    token_b = login(second_tab, "ann")
    for client, token in ((first_tab, token_a), (second_tab, token_b), (first_tab, token_a)):
        response = client.post(f"/label/{image}", data={"choice": "3"}, headers=htmx_headers(token))
        assert response.status_code == 200
    rows = db.execute("SELECT count(*) FROM annotations WHERE image_id = ?", [image]).fetchone()
    assert rows[0] == 1


# --- malformed posts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "form", "expected"),
    [
        ("/label/99999999999999999999999", {"choice": "1"}, 404),
        ("/label/0", {"choice": "1"}, 404),
        ("/label/{image}", {"choice": "١"}, 400),  # an Arabic-Indic digit
        ("/label/{image}", {"choice": "99999999999999999999999"}, 400),
        ("/label/{image}", {"choice": "-1"}, 400),
        ("/label/{image}", {"choice": "1 OR 1=1"}, 400),
        ("/label/{image}", {"choice": "label"}, 400),
        ("/label/{image}", {}, 400),
        ("/label/undo", {"annotation_id": "99999999999999999999999"}, 400),
        ("/label/undo", {"annotation_id": "-3"}, 400),
        ("/label/undo", {"annotation_id": "1e3"}, 400),
    ],
)
def test_malformed_posts_get_a_clear_error_and_write_nothing(as_user, db, path, form, expected):
    client, token = as_user("ann")
    image = card_images(client.get("/label").get_data(as_text=True))[0]
    before = snapshot(db)
    response = client.post(path.format(image=image), data=form, headers=htmx_headers(token))
    assert response.status_code == expected, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    assert text and "Traceback" not in text and len(text) < 300
    assert snapshot(db) == before


@pytest.mark.parametrize("elapsed", ["nan", "inf", "-inf", "1e400", "-5", "🙂", "9" * 40])
def test_absurd_elapsed_times_are_ignored_and_the_answer_kept(as_user, db, elapsed):
    client, token = as_user("ann")
    image = card_images(client.get("/label").get_data(as_text=True))[0]
    response = client.post(f"/label/{image}", data={"choice": "2", "elapsed_ms": elapsed},
                           headers=htmx_headers(token))
    assert response.status_code == 200
    row = db.execute("SELECT seconds FROM annotations WHERE image_id = ?", [image]).fetchone()
    assert row == (None,)


def test_a_choice_posted_twice_in_one_form_uses_the_first_only(as_user, db):
    client, token = as_user("ann")
    image = card_images(client.get("/label").get_data(as_text=True))[0]
    response = client.post(f"/label/{image}", data=MultiDict([("choice", "1"), ("choice", "2")]),
                           headers=htmx_headers(token))
    assert response.status_code == 200
    rows = db.execute("SELECT count(*) FROM annotations WHERE image_id = ?", [image]).fetchone()
    assert rows[0] == 1


def test_a_forged_id_of_an_image_someone_else_holds_is_refused_and_the_holder_votes(as_user,
                                                                                     db):
    """A real image id handed to someone else: a 409 that writes nothing, before and after
    the holder answers; the holder's own answer counts, once."""
    bob, bob_token = as_user("bob")
    held_by_bob = card_images(bob.get("/label").get_data(as_text=True))[0]
    ann, token = as_user("ann")
    forged = ann.post(f"/label/{held_by_bob}", data={"choice": "4"}, headers=htmx_headers(token))
    assert forged.status_code == 409
    response = bob.post(f"/label/{held_by_bob}", data={"choice": "5"},
                        headers=htmx_headers(bob_token))
    assert response.status_code == 200
    late = ann.post(f"/label/{held_by_bob}", data={"choice": "6"}, headers=htmx_headers(token))
    assert late.status_code == 409 and "needs no more votes" in late.get_data(as_text=True)
    votes = db.execute("SELECT user_id, count(*) FROM annotations WHERE image_id = ?"
                       " GROUP BY user_id", [held_by_bob]).fetchall()
    assert votes == [(store.get_user_by_name(db, "bob")["id"], 1)]


def test_every_post_without_its_csrf_token_is_refused_and_writes_nothing(app, as_user, db):
    client, _token = as_user("admin")
    before = snapshot(db)
    checked = 0
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods:
            continue
        url = re.sub(r"<int:\w+>", "1", rule.rule)
        for headers in ({}, {"HX-Request": "true"}):
            response = client.post(url, data={"choice": "1", "name": "x" * 8, "role": "admin",
                                              "password": "y" * 14, "strategy": "margin",
                                              "annotation_id": "1"}, headers=headers)
            assert response.status_code == 400, (url, headers)
            assert "security token" in response.get_data(as_text=True)
            checked += 1
    assert checked >= 10
    assert snapshot(db) == before


# --- oversized bodies ---------------------------------------------------------------------


@pytest.mark.parametrize("who", ["ann", None])
def test_an_oversized_body_gets_413_with_a_clear_message(app, as_user, db, who):
    if who:
        client, token = as_user(who)
        path = "/label/1"
    else:
        client = app.test_client()
        token = csrf_token(client)
        path = "/login"
    before = snapshot(db)
    body = {"choice": "1", "csrf_token": token, "junk": "x" * (2 * 1024 * 1024)}
    for headers in ({}, htmx_headers(token)):
        response = client.post(path, data=body, headers=headers)
        assert response.status_code == 413
        assert "larger than 1024 KiB: nothing was saved" in response.get_data(as_text=True)
    assert snapshot(db) == before


# --- markup in names on every page that shows them ----------------------------------------


def test_markup_in_class_and_user_names_is_escaped_on_rounds_and_status_pages(app, db, as_user):
    hostile_class = "<img src=x onerror=alert(1)>"
    store.add_classes(db, [hostile_class])
    admin_id = store.get_user_by_name(db, "admin")["id"]
    done, _ = job_rows.queue(db, "rounds", admin_id, strategy="margin")
    job_rows.start(db, "rounds", done, "round")
    ids = np.array([1, 2], dtype=np.int64)
    round_store.publish_round(
        db, done, ids, np.array([1, 1]), np.array([0.5, 0.6]), np.array([0.1, 0.2]),
        np.array([0, 1]),
        {"labels_used": 2, "accuracy": 0.5, "per_class": {hostile_class: 0.5, SCRIPT: 0.25},
         "message": f"trained on {SCRIPT}"},
    )
    failed, _ = job_rows.queue(db, "rounds", admin_id, strategy="margin")
    job_rows.start(db, "rounds", failed, "round")
    job_rows.fail(db, "rounds", failed, f"no images left in class {SCRIPT}")
    admin, _ = as_user("admin")
    for path in ("/admin/rounds/", "/admin/rounds/status", "/admin/"):
        page = admin.get(path).get_data(as_text=True)
        assert SCRIPT not in page, path
        assert hostile_class not in page, path
    history = admin.get("/admin/rounds/").get_data(as_text=True)
    assert "&lt;img src=x onerror=alert(1)&gt;" in history
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in history
    with admin.get(f"/admin/rounds/{done}/predictions.csv") as response:
        assert response.mimetype == "text/csv"  # a download, never rendered as HTML
    assert admin.get("/admin/rounds/latest.json").mimetype == "application/json"


def test_markup_in_file_names_is_escaped_in_the_import_report(tmp_path, project, as_user):
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / '"><svg onload=alert(1)>.png').write_bytes(b"not an image at all")
    (folder / "<img src=x onerror=alert(2)>.jpg").write_bytes(b"\xff\xd8 truncated")
    report = import_images(project, folder)
    assert report.issues
    admin, _ = as_user("admin")
    runs = store.import_runs(store.connect(project.db_path), limit=1)
    page = admin.get(f"/admin/imports/{runs[0]['id']}").get_data(as_text=True)
    for raw, escaped in (('"><svg onload=alert(1)>', "&#34;&gt;&lt;svg onload=alert(1)&gt;"),
                         ("<img src=x onerror=alert(2)>", "&lt;img src=x onerror=alert(2)&gt;")):
        assert raw not in page
        assert escaped in page
    listing = admin.get("/admin/").get_data(as_text=True)
    assert "<svg onload" not in listing and "<img src=x" not in listing


# --- export paths -------------------------------------------------------------------------


def _unsafe(name: str) -> bool:
    """Whether an archive member could land outside the folder it is unpacked into, read
    with '/' or with '\\' as the separator (Windows tools accept both)."""
    for candidate in (name, name.replace("\\", "/")):
        if candidate.startswith("/") or re.match(r"^[A-Za-z]:", candidate):
            return True
        normal = posixpath.normpath(candidate)
        if normal == ".." or normal.startswith("../"):
            return True
    return False


NAMES = [
    "..png",
    "...png",
    "ünïcødé ✓ 画像.png",
    "-- leading dashes.png",
    " spaced .png",
    "C:evil.png",
    "a\\..\\..\\..\\..\\..\\..\\evil-backslash.png",
]


def test_file_names_never_take_an_export_out_of_the_zip(tmp_path, digits):
    folder = tmp_path / "odd"
    folder.mkdir()
    for index, name in enumerate(NAMES):
        digit_image(digits.images[index]).save(folder / name, format="PNG")
    project, report = init_project(tmp_path / "odd-project", folder, CLASSES)
    db = store.connect(project.db_path)
    try:
        assert store.image_count(db) >= 4, report.issues  # names starting with '.' are hidden
        from server.projects import add_user

        add_user(project, "admin", "admin", "admin-password")
        uid = store.get_user_by_name(db, "admin")["id"]
        class_id = store.classes(db)[0]["id"]
        for row in db.query("SELECT id FROM images"):
            store.add_vote(db, uid, row["id"], "label", class_id)
    finally:
        db.conn.close()
    from server.app import create_app

    client = create_app(project.root, {"TESTING": True}).test_client()
    login(client, "admin", "admin-password")
    with client.get("/export?format=imagefolder") as response:
        assert response.status_code == 200
        archive = zipfile.ZipFile(io.BytesIO(response.get_data()))
    names = archive.namelist()
    assert "labels.csv" in names and any("画像" in name for name in names)
    unsafe = [name for name in names if _unsafe(name)]
    assert not unsafe, f"export member names escape the zip root: {unsafe}"
