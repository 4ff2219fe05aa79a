"""The admin page: the numbers it shows after real labeling, its users, its import reports,
and the add-user form."""

from __future__ import annotations

import html
import re
import shutil
from collections import Counter

import pytest
from conftest import (
    CLASSES,
    PASSWORDS,
    card_images,
    csrf_token,
    htmx_headers,
    login,
    write_digits,
)

from server import store
from server.app import create_app
from server.projects import add_user, import_images, init_project

# ---------------------------------------------------------------- helpers


def section(page: str, name: str) -> str:
    match = re.search(rf'<section class="panel" id="{name}">(.*?)</section>', page, re.DOTALL)
    assert match, f"no section {name!r} on the page"
    return match.group(1)


def body_rows(fragment: str) -> list[list[str]]:
    """The rows of the first table body in an HTML fragment, as the text of their cells."""
    body = re.search(r"<tbody>(.*?)</tbody>", fragment, re.DOTALL).group(1)
    return [
        [
            html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)
        ]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.DOTALL)
    ]


def table(page: str, name: str) -> list[list[str]]:
    return body_rows(section(page, name))


def flashes(page: str) -> list[str]:
    return [
        html.unescape(m) for m in re.findall(r'<p class="flash [^"]+">(.*?)</p>', page, re.DOTALL)
    ]


def class_ids(project) -> dict[str, int]:
    db = store.connect(project.db_path)
    try:
        return {c["name"]: c["id"] for c in store.classes(db)}
    finally:
        db.conn.close()


def true_label(project, digits, image_id: int) -> str:
    db = store.connect(project.db_path)
    try:
        path = store.get_image(db, image_id)["path"]
    finally:
        db.conn.close()
    return str(int(digits.target[int(path.rsplit("-", 1)[1].split(".")[0])]))


class Annotator:
    """Answers the card through the real endpoints, like the browser does."""

    def __init__(self, client, token, project, digits):
        self.client, self.token, self.project, self.digits = client, token, project, digits
        self.ids = class_ids(project)
        self.page = client.get("/label").get_data(as_text=True)

    @property
    def current(self) -> int:
        return card_images(self.page)[0]

    def post(self, url: str, data: dict) -> None:
        response = self.client.post(url, data=data, headers=htmx_headers(self.token))
        assert response.status_code == 200, response.get_data(as_text=True)
        self.page = response.get_data(as_text=True)

    def label(self, elapsed_ms: int | None = None) -> str:
        """Give the current image its true label; returns the label."""
        label = true_label(self.project, self.digits, self.current)
        data = {"choice": str(self.ids[label])}
        if elapsed_ms is not None:
            data["elapsed_ms"] = str(elapsed_ms)
        self.post(f"/label/{self.current}", data)
        return label

    def answer(self, choice: str) -> None:
        self.post(f"/label/{self.current}", {"choice": choice})

    def undo(self) -> None:
        undo_id = re.search(r'name="annotation_id" value="(\d+)"', self.page).group(1)
        self.post("/label/undo", {"annotation_id": undo_id})


@pytest.fixture
def admin(app):
    client = app.test_client()
    token = login(client, "admin")
    return client, token


def admin_page(client) -> str:
    response = client.get("/admin/")
    assert response.status_code == 200
    return response.get_data(as_text=True)


# ---------------------------------------------------------------- numbers


def test_counts_follow_the_labeling(project, app, as_user, admin, digits):
    add_user(project, "cat", "annotator", "cat-password")
    ann = Annotator(*as_user("ann"), project, digits)
    bob = Annotator(*as_user("bob"), project, digits)
    cat_client = app.test_client()
    cat = Annotator(cat_client, login(cat_client, "cat", "cat-password"), project, digits)

    given = [ann.label() for _ in range(5)]
    ann.answer("skip")
    ann.label()
    ann.undo()  # the sixth label is taken back: its image is unlabeled again
    given += [bob.label(elapsed_ms=ms) for ms in (1500, 2500, 4000)]
    cat.answer("unsure")

    page = admin_page(admin[0])
    assert "40 images: 8 labeled, 1 disputed, 31 waiting for votes." in section(page, "images")

    per_class = Counter(given)
    assert table(page, "images") == [[name, str(per_class[name])] for name in CLASSES]

    rows = {row[0]: row for row in table(page, "annotators")}
    assert sorted(rows) == ["admin", "ann", "bob", "cat"]
    # name, labels, today, skips, unsure, undos, median seconds
    assert rows["ann"] == ["ann", "5", "5", "1", "0", "1", "–"]
    assert rows["bob"] == ["bob", "3", "3", "0", "0", "0", "2.5"]
    assert rows["cat"][1] == "0" and rows["cat"][3:6] == ["0", "1", "0"]
    assert rows["admin"][1:6] == ["0", "0", "0", "0", "0"]


def test_imported_labels_count_per_class(tmp_path, digits):
    folder = tmp_path / "sorted"
    truth = write_digits(folder, digits, 30, per_class=True)
    write_digits(folder, digits, 5, start=100)  # loose files: imported unlabeled
    project, _report = init_project(tmp_path / "p", folder)
    add_user(project, "admin", "admin", PASSWORDS["admin"])
    client = create_app(project.root, {"TESTING": True}).test_client()
    login(client, "admin")

    page = admin_page(client)
    assert "35 images: 30 labeled, 0 disputed, 5 waiting for votes." in page
    per_class = Counter(truth.values())
    assert table(page, "images") == [[name, str(per_class[name])] for name in sorted(per_class)]
    run = table(page, "imports")[0]
    assert run[0] == "1" and run[1] == str(folder)
    assert run[3:] == ["35", "30", "0", "0", "0"]


def test_users_are_listed_with_their_roles(admin):
    rows = table(admin_page(admin[0]), "users")
    assert [row[:2] for row in rows] == [
        ["admin", "admin"],
        ["ann", "annotator"],
        ["bob", "annotator"],
    ]
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row[2])


# ---------------------------------------------------------------- imports


def test_import_report_lists_what_was_skipped(project, image_folder, admin, tmp_path, digits):
    more = tmp_path / "more"
    write_digits(more, digits, 2, start=500)
    shutil.copy(image_folder / "digit-0000.png", more / "again.png")  # same bytes: duplicate
    (more / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    (more / "notes.txt").write_text("not an image")
    import_images(project, more)

    client = admin[0]
    runs = table(admin_page(client), "imports")
    assert [r[0] for r in runs] == ["2", "1"]  # newest first
    assert runs[0][1] == str(more.resolve())
    assert runs[0][3:] == ["2", "0", "1", "1", "1"]  # added, labeled, duplicates, skipped, ignored
    assert runs[1][1] == str(image_folder.resolve())
    assert runs[1][3:] == ["40", "0", "0", "0", "0"]

    report = client.get("/admin/imports/2")
    assert report.status_code == 200
    page = report.get_data(as_text=True)
    assert (
        "2 added (0 labeled from class folders), 1 duplicates, 1 skipped, 1 other files ignored"
        in html.unescape(page)
    )
    issues = body_rows(page)
    kinds = {row[0]: row[1] for row in issues}
    assert kinds == {str(more / "again.png"): "duplicate", str(more / "broken.png"): "skipped"}
    duplicate = next(row for row in issues if row[1] == "duplicate")
    assert str(image_folder / "digit-0000.png") in duplicate[2]

    clean = html.unescape(client.get("/admin/imports/1").get_data(as_text=True))
    assert "Every file was imported." in clean
    assert client.get("/admin/imports/99").status_code == 404


# ---------------------------------------------------------------- add user


def add_user_form(client, token, **fields):
    return client.post("/admin/users", data={"csrf_token": token, **fields}, follow_redirects=True)


def test_added_user_gets_a_generated_password_shown_once(app, admin):
    client, _ = admin
    token = csrf_token(client, "/admin/")
    response = add_user_form(client, token, name="carol", role="annotator", password="")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert flashes(page) == []  # a flash would carry it in the session cookie
    shown = re.search(r"Added annotator carol: password <code>(\S+)</code>", page)
    assert shown, page
    password = shown.group(1)
    users = table(response.get_data(as_text=True), "users")
    assert ["carol", "annotator"] in [r[:2] for r in users]
    assert password not in admin_page(client)  # shown once only

    carol = app.test_client()
    login(carol, "carol", password)
    assert carol.get("/label").status_code == 200
    assert carol.get("/admin/").status_code == 403


def test_added_admin_with_a_typed_password_can_log_in(app, admin):
    client, _ = admin
    token = csrf_token(client, "/admin/")
    typed = "  two spaces each side  "  # kept exactly as typed
    response = add_user_form(client, token, name="dora", role="admin", password=typed)
    assert flashes(response.get_data(as_text=True)) == [
        "Added admin 'dora' with the password you typed."
    ]
    assert typed not in response.get_data(as_text=True)
    dora = app.test_client()
    login(dora, "dora", typed)
    assert dora.get("/admin/").status_code == 200


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "ann", "role": "annotator"}, "User not added: a user named 'ann' already exists"),
        ({"name": " ann ", "role": "admin"}, "User not added: a user named 'ann' already exists"),
        ({"name": "eve", "role": "superuser"}, "User not added: unknown role 'superuser'"),
        ({"name": "   ", "role": "annotator"}, "User not added: a user name cannot be empty"),
        (
            {"name": "eve", "role": "annotator", "password": "short"},
            "User not added: a password needs at least 8 characters",
        ),
    ],
)
def test_add_user_mistakes_are_explained_and_change_nothing(admin, fields, message):
    client, _ = admin
    before = table(admin_page(client), "users")
    token = csrf_token(client, "/admin/")
    response = add_user_form(client, token, **fields)
    assert response.status_code == 200
    [shown] = flashes(response.get_data(as_text=True))
    assert shown.startswith(message), shown
    assert table(response.get_data(as_text=True), "users") == before


def test_add_user_needs_the_csrf_token(admin):
    client, _ = admin
    before = table(admin_page(client), "users")
    response = client.post("/admin/users", data={"name": "mallory", "role": "admin"})
    assert response.status_code == 400
    assert table(admin_page(client), "users") == before


# ---------------------------------------------------------------- access


def test_annotators_cannot_reach_the_admin_pages(app, as_user):
    client, token = as_user("ann")
    assert client.get("/admin/").status_code == 403
    assert client.get("/admin/imports/1").status_code == 403
    response = client.post(
        "/admin/users", data={"csrf_token": token, "name": "mallory", "role": "admin"}
    )
    assert response.status_code == 403
    admin = app.test_client()
    login(admin, "admin")
    assert "mallory" not in [r[0] for r in table(admin_page(admin), "users")]
    visitor = app.test_client().get("/admin/")
    assert visitor.status_code == 302 and visitor.headers["Location"].startswith("/login")
