"""Users, roles, login and logout, CSRF, redirects and escaping, through the real app."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from argon2 import PasswordHasher
from conftest import PASSWORDS, card_images, csrf_token, htmx_headers, login

from server import store
from server.cli.main import main


@pytest.fixture
def db(project):
    connection = store.connect(project.db_path)
    yield connection
    connection.conn.close()


def count(db, table: str) -> int:
    return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def leases_of(db, name: str) -> set[int]:
    uid = store.get_user_by_name(db, name)["id"]
    return {r["image_id"] for r in db.query("SELECT image_id FROM leases WHERE user_id = ?", [uid])}


def post_login(client, name: str, password: str, query: str = ""):
    token = csrf_token(client)
    return client.post(
        f"/login{query}", data={"name": name, "password": password, "csrf_token": token}
    )


def location_path(response) -> str:
    parts = urlsplit(response.headers["Location"])
    assert parts.netloc in ("", "localhost"), response.headers["Location"]
    return parts.path


def example_url(rule) -> str:
    """The rule with its variables filled in: 1 for numbers, 'x' for anything else."""
    url = re.sub(r"<int:\w+>", "1", rule.rule)
    return re.sub(r"<[^>]+>", "x", url)


# --- users and passwords ------------------------------------------------------------------


def test_user_add_prints_a_generated_password_stored_as_an_argon2_hash(project, runner, db, client):
    result = runner.invoke(main, ["user", "add", str(project.root), "carol", "--role", "annotator"])
    assert result.exit_code == 0, result.output
    match = re.search(r"password: (\S+)", result.output)
    assert match, result.output
    password = match.group(1)
    assert len(password) >= 12

    row = store.get_user_by_name(db, "carol")
    assert row["role"] == "annotator"
    assert row["password_hash"].startswith("$argon2id$")
    assert password not in row["password_hash"]
    assert PasswordHasher().verify(row["password_hash"], password)

    response = post_login(client, "carol", password)
    assert response.status_code == 302 and location_path(response) == "/label"


def test_user_add_accepts_a_password_and_a_role(project, runner, db, client):
    result = runner.invoke(
        main,
        [
            "user",
            "add",
            str(project.root),
            "dora",
            "--role",
            "admin",
            "--password",
            "a-long-secret",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "a-long-secret" in result.output
    assert store.get_user_by_name(db, "dora")["role"] == "admin"
    response = post_login(client, "dora", "a-long-secret")
    assert response.status_code == 302 and location_path(response) == "/admin/"


@pytest.mark.parametrize(
    "args",
    [
        ["eve", "--role", "superuser"],
        ["eve", "--password", "short"],
        ["ann"],  # taken
        ["   "],
    ],
)
def test_user_add_refuses_bad_input_and_adds_nobody(project, runner, db, args):
    users = count(db, "users")
    result = runner.invoke(main, ["user", "add", str(project.root), *args])
    assert result.exit_code != 0
    assert result.output.strip()
    assert "Traceback" not in result.output
    assert count(db, "users") == users


# --- login and logout ---------------------------------------------------------------------


def test_an_anonymous_visitor_gets_the_login_page_and_static_files(client):
    page = client.get("/login")
    assert page.status_code == 200
    assert 'name="csrf_token"' in page.get_data(as_text=True)
    for path in ("/static/app.css", "/static/vendor/htmx/htmx.min.js", "/static/label.js"):
        with client.get(path) as response:
            assert response.status_code == 200, path


def test_every_other_page_redirects_an_anonymous_visitor_to_login(app, client):
    token = csrf_token(client)
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "auth.login"):
            continue
        url = example_url(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if method == "GET":
                response = client.get(url)
            else:
                response = client.open(url, method=method, data={"csrf_token": token})
            assert response.status_code == 302, (method, url, response.status_code)
            assert location_path(response) == "/login", (method, url)
            checked += 1
    assert checked >= 8


def test_a_page_asked_for_while_logged_out_comes_back_after_login(client):
    response = client.get("/label?from=bookmark")
    assert location_path(response) == "/login"
    query = urlsplit(response.headers["Location"]).query
    assert parse_qs(query)["next"] == ["/label?from=bookmark"]
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Your session has expired or you are not logged in" in page
    back = post_login(client, "ann", PASSWORDS["ann"], f"?{query}")
    assert back.headers["Location"] == "/label?from=bookmark"


def test_an_anonymous_htmx_request_is_told_to_load_the_login_page(client):
    response = client.get(
        "/label", headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/label"}
    )
    assert response.status_code == 401
    target = urlsplit(response.headers["HX-Redirect"])
    assert target.path == "/login"
    assert parse_qs(target.query)["next"] == ["/label"]
    assert "session expired" in response.get_data(as_text=True)


def test_an_htmx_answer_after_the_session_expired_redirects_to_login_and_writes_nothing(
    as_user, db
):
    client, token = as_user("ann")
    first, _ = card_images(client.get("/label", headers=htmx_headers(token)).get_data(True))
    client.delete_cookie("session")  # what an expired session looks like to the server
    response = client.post(
        f"/label/{first}",
        data={"choice": "1"},
        headers={**htmx_headers(token), "HX-Current-URL": "http://localhost/label"},
    )
    assert response.status_code == 401
    target = urlsplit(response.headers["HX-Redirect"])
    assert target.path == "/login"
    # Back to the page after login, not to /label/<id>, which only takes posts.
    assert parse_qs(target.query)["next"] == ["/label"]
    assert count(db, "annotations") == 0


def test_a_logged_in_htmx_post_with_a_bad_token_is_still_refused_with_400(as_user, db):
    client, _token = as_user("ann")
    first, _ = card_images(client.get("/label").get_data(as_text=True))
    response = client.post(f"/label/{first}", data={"choice": "1"}, headers=htmx_headers("forged"))
    assert response.status_code == 400
    assert "HX-Redirect" not in response.headers
    assert "nothing was saved" in response.get_data(as_text=True)
    assert count(db, "annotations") == 0


def test_the_login_page_after_an_off_site_htmx_page_does_not_point_off_site(client):
    response = client.get(
        "/label", headers={"HX-Request": "true", "HX-Current-URL": "http://evil.com//evil.com/x"}
    )
    assert response.status_code == 401
    assert "evil.com" not in response.headers["HX-Redirect"]


def test_a_wrong_password_gets_a_clear_message_and_401(client):
    for name, password in (("ann", "not-her-password"), ("nobody", "whatever-it-is"), ("", "")):
        response = post_login(client, name, password)
        assert response.status_code == 401
        assert "Unknown user name or wrong password." in response.get_data(as_text=True)
    assert client.get("/label").status_code == 302


def test_a_user_name_echoed_on_the_login_page_is_escaped(client):
    name = '"><script>alert(1)</script>'
    html = post_login(client, name, "wrong-password").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize(
    ("name", "home"), [("ann", "/label"), ("bob", "/label"), ("admin", "/admin/")]
)
def test_login_sends_each_role_home(client, name, home):
    response = post_login(client, name, PASSWORDS[name])
    assert response.status_code == 302
    assert location_path(response) == home
    assert client.get(home).status_code == 200


def test_next_cannot_send_anyone_off_site(app):
    targets = [
        "//evil.com",
        "//evil.com/label",
        "http://evil.com",
        "https://evil.com/label",
        "/\\evil.com",
        "\\\\evil.com",
        "/\t/evil.com",
        "/\n/evil.com",
        "javascript:alert(1)",
        "evil.com",
        "///evil.com",
    ]
    for target in targets:
        client = app.test_client()
        response = post_login(client, "ann", PASSWORDS["ann"], "?" + urlencode({"next": target}))
        assert response.status_code == 302, target
        assert response.headers["Location"] == "/label", target


def test_next_keeps_a_same_site_path(client):
    response = post_login(client, "ann", PASSWORDS["ann"], "?" + urlencode({"next": "/label?x=1"}))
    assert response.headers["Location"] == "/label?x=1"


def test_the_session_cookie_is_httponly_and_samesite_lax(client):
    response = post_login(client, "ann", PASSWORDS["ann"])
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert cookies
    for cookie in cookies:
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags
        assert "samesite=lax" in flags


def test_logout_ends_the_session_and_releases_the_users_leases(app, as_user, db):
    ann, token = as_user("ann")  # logging in opens /label, which leases two images
    held = leases_of(db, "ann")
    assert len(held) == 2
    response = ann.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302 and location_path(response) == "/login"
    assert leases_of(db, "ann") == set()
    assert ann.get("/label").status_code == 302
    bob, _ = as_user("bob")
    assert set(card_images(bob.get("/label").get_data(as_text=True))) == held


def test_logout_takes_a_post_only(as_user, db):
    client, _token = as_user("ann")
    assert client.get("/logout").status_code == 405
    assert client.get("/label").status_code == 200
    assert len(leases_of(db, "ann")) == 2


# --- CSRF ---------------------------------------------------------------------------------


def _bad_tokens(app) -> list[dict]:
    """No token, a made-up one, and a real token from someone else's session."""
    other = app.test_client()
    return [{}, {"csrf_token": "forged"}, {"csrf_token": csrf_token(other)}]


def test_answers_and_undo_need_the_csrf_token(app, as_user, db):
    client, token = as_user("ann")
    first, _ = card_images(client.get("/label").get_data(as_text=True))
    for bad in _bad_tokens(app):
        headers = {"HX-Request": "true", **({"X-CSRFToken": bad["csrf_token"]} if bad else {})}
        response = client.post(f"/label/{first}", data={"choice": "1"}, headers=headers)
        assert response.status_code == 400, bad
        response = client.post(f"/label/{first}", data={"choice": "1", **bad})
        assert response.status_code == 400, bad
    assert count(db, "annotations") == 0

    client.post(f"/label/{first}", data={"choice": "1"}, headers=htmx_headers(token))
    vote = store.last_answer(db, store.get_user_by_name(db, "ann")["id"])["id"]
    for bad in _bad_tokens(app):
        response = client.post("/label/undo", data={"annotation_id": str(vote), **bad})
        assert response.status_code == 400, bad
    assert count(db, "annotations") == 1


def test_adding_a_user_needs_the_csrf_token(app, as_user, db):
    client, _token = as_user("admin")
    users = count(db, "users")
    for bad in _bad_tokens(app):
        response = client.post(
            "/admin/users", data={"name": "mallory", "role": "admin", "password": "x" * 12, **bad}
        )
        assert response.status_code == 400, bad
        assert "security token" in response.get_data(as_text=True)
    assert count(db, "users") == users
    assert store.get_user_by_name(db, "mallory") is None


def test_logout_needs_the_csrf_token(app, as_user, db):
    client, _token = as_user("ann")
    for bad in _bad_tokens(app):
        assert client.post("/logout", data=bad).status_code == 400, bad
    assert client.get("/label").status_code == 200
    assert len(leases_of(db, "ann")) == 2


def test_login_needs_the_csrf_token(app, client):
    client.get("/login")
    for bad in _bad_tokens(app):
        response = client.post("/login", data={"name": "ann", "password": PASSWORDS["ann"], **bad})
        assert response.status_code == 400, bad
    assert client.get("/label").status_code == 302


def test_pages_carry_the_token_for_forms_and_for_htmx(as_user):
    client, token = as_user("ann")
    html = client.get("/label").get_data(as_text=True)
    assert f'<meta name="csrf-token" content="{token}">' in html
    assert f'hx-headers=\'{{"X-CSRFToken": "{token}"}}\'' in html
    assert f'name="csrf_token" value="{token}"' in html  # the logout form


# --- roles --------------------------------------------------------------------------------


def test_annotators_cannot_reach_admin_pages_or_export(app, as_user, db):
    client, token = as_user("ann")
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/admin", "/export")):
            continue
        url = example_url(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(
                url, method=method, data={"csrf_token": token} if method != "GET" else None
            )
            assert response.status_code == 403, (method, url)
            checked += 1
    assert checked >= 4
    for query in ("?format=csv", "?format=jsonl", "?format=imagefolder"):
        assert client.get(f"/export{query}").status_code == 403
    response = client.post(
        "/admin/users",
        data={"name": "mallory", "role": "admin", "password": "x" * 12, "csrf_token": token},
    )
    assert response.status_code == 403
    assert store.get_user_by_name(db, "mallory") is None


def test_admins_reach_admin_pages_and_export(as_user):
    client, _token = as_user("admin")
    assert client.get("/admin/").status_code == 200
    with client.get("/export?format=csv") as response:
        assert response.status_code == 200


def test_home_sends_each_role_to_its_page(as_user):
    ann, _ = as_user("ann")
    admin, _ = as_user("admin")
    assert location_path(ann.get("/")) == "/label"
    assert location_path(admin.get("/")) == "/admin/"


# --- escaping -----------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_a_user_name_with_markup_is_shown_escaped(app, as_user, db):
    admin, token = as_user("admin")
    response = admin.post(
        "/admin/users",
        data={
            "name": SCRIPT,
            "role": "annotator",
            "password": "script-password",
            "csrf_token": token,
        },
    )
    assert response.status_code == 302
    assert store.get_user_by_name(db, SCRIPT) is not None
    page = admin.get("/admin/").get_data(as_text=True)  # also shows the "added" message
    assert SCRIPT not in page
    assert page.count(ESCAPED_SCRIPT) >= 2

    client = app.test_client()
    login(client, SCRIPT, "script-password")
    page = client.get("/label").get_data(as_text=True)
    assert SCRIPT not in page
    assert ESCAPED_SCRIPT in page  # the header names the logged-in user


def test_a_class_name_with_markup_is_shown_escaped(db, as_user):
    names = {
        "<script>alert(1)": "&lt;script&gt;alert(1)",
        "<img src=x onerror=alert(1)>": "&lt;img src=x onerror=alert(1)&gt;",
        '"><svg onload=alert(1)>': "&#34;&gt;&lt;svg onload=alert(1)&gt;",
    }
    store.add_classes(db, list(names))
    ann, _ = as_user("ann")
    admin, _ = as_user("admin")
    for client, path in ((ann, "/label"), (admin, "/admin/")):
        page = client.get(path).get_data(as_text=True)
        for name, escaped in names.items():
            assert name not in page, (path, name)
            assert escaped in page, (path, name)


def test_a_class_name_cannot_hold_a_closing_tag(db):
    """Class names become folder names, so '/' is refused outright."""
    with pytest.raises(store.StoreError):
        store.add_classes(db, [SCRIPT])
