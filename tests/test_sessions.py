"""Sessions that end on the server (logout, password change, deactivation), changing a
password (the page, the admin's page, the CLI), weak passwords refused, and no generated
password in the session cookie. Through the real app, a real SQLite file and the CLI."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from conftest import PASSWORDS, csrf_token, login

from server import store
from server.cli.main import main


def cookie_of(client) -> str:
    return client.get_cookie("session").value


def replay(app, cookie: str):
    """A fresh client carrying a saved copy of the session cookie: what an attacker (or a
    shared computer) holds after the person logged out."""
    other = app.test_client()
    other.set_cookie("session", cookie)
    return other


def lands_on_login(client, path: str = "/label") -> bool:
    response = client.get(path)
    return response.status_code == 302 and "/login" in response.headers["Location"]


def cli(*args, input: str | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def test_a_saved_cookie_is_dead_after_logout(app):
    client = app.test_client()
    login(client, "ann")
    saved = cookie_of(client)
    assert replay(app, saved).get("/label").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_token(client, "/label")})
    assert lands_on_login(replay(app, saved))
    # Another session of the same person (another browser) lives on.
    elsewhere = app.test_client()
    login(elsewhere, "ann")
    assert elsewhere.get("/label").status_code == 200


def test_changing_my_password_ends_my_other_sessions_and_keeps_this_one(app):
    here, there = app.test_client(), app.test_client()
    token = login(here, "ann")
    login(there, "ann")
    page = here.get("/account/password").get_data(as_text=True)
    assert "Change my password" in page
    form = {"csrf_token": token, "current": PASSWORDS["ann"], "new": "maple-otter-canvas",
            "again": "maple-otter-canvas"}
    for change, reason in [({"current": "not-the-one"}, "current password is not right"),
                           ({"again": "maple-otter-canva"}, "two new passwords differ"),
                           ({"new": "12345678", "again": "12345678"}, "too easy to guess"),
                           ({"new": "aaaaaaaaaaaa", "again": "aaaaaaaaaaaa"}, "one character")]:
        refused = here.post("/account/password", data={**form, **change})
        assert refused.status_code == 400
        assert reason in refused.get_data(as_text=True), change
    assert there.get("/label").status_code == 200  # nothing changed yet
    done = here.post("/account/password", data=form)
    assert done.status_code == 302
    kept = here.get("/label")
    assert kept.status_code == 200
    assert "1 other session ended" in kept.get_data(as_text=True)
    assert lands_on_login(there)
    assert not _can_log_in(app, "ann", PASSWORDS["ann"])
    assert _can_log_in(app, "ann", "maple-otter-canvas")


def _can_log_in(app, name: str, password: str) -> bool:
    client = app.test_client()
    return client.post("/login", data={"name": name, "password": password,
                                       "csrf_token": csrf_token(client)}).status_code == 302


def test_the_cli_sets_a_password_and_deactivates_and_activates_ending_sessions(app, project):
    client = app.test_client()
    login(client, "ann")
    done = cli("user", "passwd", project.root, "ann", input="maple-otter-canvas\n" * 2)
    assert done.exit_code == 0, done.output
    assert lands_on_login(client)
    assert _can_log_in(app, "ann", "maple-otter-canvas")
    weak = cli("user", "passwd", project.root, "ann", input="12345678\n" * 2)
    assert weak.exit_code == 1 and "too easy to guess" in weak.output
    generated = cli("user", "passwd", project.root, "bob", "--generate")
    assert generated.exit_code == 0, generated.output
    secret = re.search(r"New password for bob: (\S+);", generated.output).group(1)
    assert _can_log_in(app, "bob", secret)

    login(client, "bob", secret)
    assert cli("user", "deactivate", project.root, "bob").exit_code == 0
    assert lands_on_login(client)
    assert not _can_log_in(app, "bob", secret)
    assert "bob\tannotator\tdeactivated" in cli("user", "list", project.root).output
    assert cli("user", "activate", project.root, "bob").exit_code == 0
    assert _can_log_in(app, "bob", secret)
    unknown = cli("user", "deactivate", project.root, "nobody")
    assert unknown.exit_code == 1 and "no user named 'nobody'" in unknown.output
    last = cli("user", "deactivate", project.root, "admin")
    assert last.exit_code == 1 and "last active admin" in last.output
    assert cli("user", "add", project.root, "erin", "--password", "qwertyuiop").exit_code == 1


def session_contents(app, client) -> str:
    """What the signed (not encrypted) session cookie says, decoded as anyone can."""
    serializer = app.session_interface.get_signing_serializer(app)
    return repr(serializer.loads(cookie_of(client)))


def test_the_admin_page_deactivates_activates_and_resets_without_a_password_in_the_cookie(
        app, project):
    admin = app.test_client()
    token = login(admin, "admin")
    ann = app.test_client()
    login(ann, "ann")
    db = store.connect(project.db_path)
    ann_id = store.get_user_by_name(db, "ann")["id"]
    db.conn.close()
    added = admin.post("/admin/users", data={"csrf_token": token, "name": "carol",
                                             "role": "annotator", "password": ""})
    assert added.status_code == 200
    page = added.get_data(as_text=True)
    secret = re.search(r"Added annotator carol: password <code>(\S+)</code>", page).group(1)
    assert secret not in session_contents(app, admin)
    assert _can_log_in(app, "carol", secret)
    weak = admin.post("/admin/users", data={"csrf_token": token, "name": "dan",
                                            "role": "annotator", "password": "password1"})
    assert "too easy to guess" in admin.get(weak.headers["Location"]).get_data(as_text=True)

    reset = admin.post(f"/admin/users/{ann_id}/password", data={"csrf_token": token})
    fresh = re.search(r"New password for ann: password <code>(\S+)</code>",
                      reset.get_data(as_text=True)).group(1)
    assert fresh not in session_contents(app, admin)
    assert lands_on_login(ann)
    login(ann, "ann", fresh)
    off = admin.post(f"/admin/users/{ann_id}/active", data={"csrf_token": token, "active": "0"})
    assert off.status_code == 302
    assert lands_on_login(ann)
    listing = admin.get("/admin/").get_data(as_text=True)
    assert "deactivated" in listing
    assert not _can_log_in(app, "ann", fresh)
    admin.post(f"/admin/users/{ann_id}/active", data={"csrf_token": token, "active": "1"})
    assert _can_log_in(app, "ann", fresh)
    assert admin.post("/admin/users/99999/active",
                      data={"csrf_token": token, "active": "0"}).status_code == 404


@pytest.mark.parametrize("password", ["12345678", "password", "aaaaaaaaaa", "qwertyuiop"])
def test_common_and_one_character_passwords_are_refused_with_the_reason(project, password):
    from server.projects import add_user

    with pytest.raises(ValueError, match="too easy to guess"):
        add_user(project, "weak", "annotator", password)
