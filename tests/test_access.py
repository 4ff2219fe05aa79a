"""Who may do what, route by route, from one table; cookies; nothing secret in logs or pages;
and the login rate limit. A route added without a rule here makes this suite fail."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

import pytest
from conftest import PASSWORDS, csrf_token, htmx_headers, login

from server import store
from server.cli.main import main
from server.projects import add_user

# The least a visitor must be for each endpoint: 'public' (anyone, logged in or not),
# 'annotator' (any logged-in user) or 'admin'. Keep this in step with the app: a new
# endpoint without a line here fails test_every_endpoint_has_a_rule.
RULES = {
    "static": "public",
    "auth.login": "public",
    "auth.logout": "public",  # harmless when logged out: it only ends a session
    "auth.home": "annotator",
    "annotate.label": "annotator",
    "annotate.answer": "annotator",
    "annotate.undo": "annotator",
    "images.show": "annotator",
    "admin.index": "admin",
    "admin.add_user": "admin",
    "admin.set_active": "admin",
    "admin.reset_password": "admin",
    "account.password": "annotator",
    "admin.import_report": "admin",
    "upload.upload_images": "admin",
    "export.download": "admin",
    "rounds.status": "admin",
    "rounds.retrain": "admin",
    "rounds.history": "admin",
    "rounds.latest_json": "admin",
    "rounds.predictions_csv": "admin",
    "review.index": "reviewer",
    "review.show": "reviewer",
    "review.decide": "reviewer",
    "review.send": "reviewer",
    "agreement.index": "admin",
    "agreement.refit": "admin",
    "agreement.review_confused": "admin",
    "agreement.undo_confused": "admin",
    "quality.review_group": "admin",
    "quality.undo_group": "admin",
    "agreement.confusion_png": "admin",
    "quality.index": "admin",
    "autolabel.index": "admin",
    "autolabel.status": "admin",
    "autolabel.run": "admin",
    "autolabel.withdraw": "admin",
    "quality.status": "admin",
    "quality.run": "admin",
    "quality.decide": "admin",
    "quality.suspects_csv": "admin",
    "quality.curve_png": "admin",
    "bulk.bootstrap": "annotator",
    "bulk.clusters": "annotator",
    "bulk.cluster_view": "annotator",
    "bulk.decide_cluster": "annotator",
    "bulk.undo_cluster": "annotator",
    "bulk.run_clustering": "admin",
    "bulk.clustering_status": "admin",
    "bulk.verify": "annotator",
    "bulk.accept": "annotator",
    "bulk.undo_grid": "annotator",
}
RANK = {"public": 0, "annotator": 1, "reviewer": 2, "admin": 3}
VISITORS = {"anonymous": None, "annotator": "ann", "reviewer": "rita", "admin": "admin"}
# What required_roles the decorator must carry for each non-public level.
DECORATED = {"annotator": ("any",), "reviewer": ("admin", "reviewer"), "admin": ("admin",)}
REVIEWER_PASSWORD = "rita-password-long"


def example_url(rule) -> str:
    if rule.endpoint == "static":
        return "/static/app.css"
    url = re.sub(r"<int:\w+>", "1", rule.rule)
    return re.sub(r"<[^>]+>", "x", url)


def routes(app) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every route and method; logout last, since it ends the
    session the other requests use."""
    found = [
        (rule.endpoint, method, example_url(rule))
        for rule in app.url_map.iter_rules()
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
    ]
    return sorted(found, key=lambda r: (r[0] == "auth.logout", r[0], r[1]))


def test_every_endpoint_has_a_rule(app):
    assert set(RULES) == set(app.view_functions), (
        "add the new endpoint to RULES (or drop the removed one)"
    )
    for endpoint, level in RULES.items():
        view = app.view_functions[endpoint]
        if level == "public":
            assert not hasattr(view, "required_roles"), endpoint
        else:
            assert getattr(view, "required_roles", None) == DECORATED[level], endpoint


def _post_data(endpoint: str, token: str) -> dict:
    """A plausible form for each POST, so an allowed request does real work."""
    forms = {
        "annotate.answer": {"choice": "1"},
        "annotate.undo": {"annotation_id": "1"},
        "admin.add_user": {"name": "newcomer", "role": "annotator", "password": "x" * 14},
        "rounds.retrain": {"strategy": "margin"},
        "review.decide": {"choice": "1"},
        "bulk.decide_cluster": {"class_id": "1", "shown": "1"},
        "bulk.accept": {"class_id": "1", "shown": "1", "round_id": "1"},
        "bulk.run_clustering": {"k": "3"},
        "auth.login": {"name": "nobody", "password": "not-a-password"},
    }
    return {**forms.get(endpoint, {}), "csrf_token": token}


@pytest.mark.parametrize("visitor", list(VISITORS))
def test_each_visitor_gets_what_the_table_says_on_every_route(app, visitor):
    client = app.test_client()
    name = VISITORS[visitor]
    if visitor == "reviewer":
        add_user(app.extensions["activelabel"], name, "reviewer", REVIEWER_PASSWORD)
    token = login(client, name, REVIEWER_PASSWORD if visitor == "reviewer" else None) if name \
        else csrf_token(client)
    rank = RANK[visitor] if visitor != "anonymous" else 0
    checked = 0
    for endpoint, method, url in routes(app):
        needed = RANK[RULES[endpoint]]
        data = _post_data(endpoint, token) if method != "GET" else None
        with client.open(url, method=method, data=data) as response:
            status = response.status_code
            where = response.headers.get("Location", "")
        what = (visitor, method, url, status)
        assert status < 500, what
        if rank >= needed:
            assert status != 403, what
            if endpoint not in ("auth.logout", "auth.login"):
                assert urlsplit(where).path != "/login", what
        elif name is None:
            assert status == 302 and urlsplit(where).path == "/login", what
        else:
            assert status == 403, what
        checked += 1
    assert checked == sum(len(r.methods - {"HEAD", "OPTIONS"}) for r in app.url_map.iter_rules())


def test_an_anonymous_htmx_request_to_any_protected_route_gets_401_not_the_page(app):
    client = app.test_client()
    token = csrf_token(client)
    for endpoint, method, url in routes(app):
        if RULES[endpoint] == "public":
            continue
        response = client.open(url, method=method, headers=htmx_headers(token))
        assert response.status_code == 401, (method, url)
        assert urlsplit(response.headers["HX-Redirect"]).path == "/login"


# --- cookies ------------------------------------------------------------------------------


def test_the_anonymous_session_cookie_carrying_the_csrf_token_is_httponly_and_samesite(app):
    """test_auth checks the cookie set at login; the one set on the login page (it holds
    the CSRF secret before anyone logs in) needs the same flags."""
    with app.test_client().get("/login") as response:
        cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert cookies
    for cookie in cookies:
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags and "samesite=lax" in flags
    assert app.config["REMEMBER_COOKIE_HTTPONLY"] is True


# --- secrets stay out of logs and pages ---------------------------------------------------


def test_no_password_csrf_token_or_hash_reaches_the_logs_or_any_page(
    app, project, runner, caplog
):
    caplog.set_level(logging.DEBUG)
    ann = app.test_client()
    token = csrf_token(ann)
    ann.post("/login", data={"name": "ann", "password": "wrong-guess-1234", "csrf_token": token})
    token = login(ann, "ann")
    card = ann.get("/label").get_data(as_text=True)
    first = int(re.search(r'src="/images/(\d+)', card).group(1))
    ann.post(f"/label/{first}", data={"choice": "1"}, headers=htmx_headers(token))
    ann.post(f"/label/{first}", data={"choice": "2"}, headers=htmx_headers("forged-token"))
    ann.post("/logout", data={"csrf_token": token})

    admin = app.test_client()
    admin_token = login(admin, "admin")
    admin.post("/admin/users", data={"name": "webuser", "role": "annotator",
                                     "password": "typed-web-secret", "csrf_token": admin_token})
    result = runner.invoke(main, ["user", "add", str(project.root), "carol"])
    assert result.exit_code == 0, result.output
    printed = re.search(r"password: (\S+)", result.output).group(1)
    # The one-time password is printed exactly once, and nothing else secret is.
    assert result.output.count(printed) == 1

    db = store.connect(project.db_path)
    hashes = [r[0] for r in db.execute("SELECT password_hash FROM users")]
    db.conn.close()
    secrets = [*PASSWORDS.values(), "wrong-guess-1234", "typed-web-secret", printed, token,
               admin_token, *hashes]
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    output_but_password = result.output.replace(printed, "")
    for secret in secrets:
        assert secret not in logged, secret
        assert secret not in output_but_password, secret

    pages = []
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and RULES[rule.endpoint] != "public":
            with admin.get(example_url(rule)) as response:
                if response.mimetype.startswith(("text/", "application/json")):
                    pages.append(response.get_data(as_text=True))
    pages.append(admin.get("/admin/").get_data(as_text=True))
    assert any("webuser" in page for page in pages)
    for page in pages:
        assert "$argon2" not in page
        for hashed in hashes:
            assert hashed not in page


# --- login rate limit ---------------------------------------------------------------------


def _attempt(client, name: str, password: str, address: str = "10.0.0.1"):
    token = csrf_token(client)
    return client.post(
        "/login",
        data={"name": name, "password": password, "csrf_token": token},
        environ_base={"REMOTE_ADDR": address},
    )


def test_ten_failed_logins_for_a_name_at_one_address_block_it_there_even_with_the_password(app):
    client = app.test_client()
    for attempt in range(10):
        assert _attempt(client, "ann", f"wrong-{attempt}").status_code == 401
    response = _attempt(client, "ann", PASSWORDS["ann"])
    assert response.status_code == 429
    page = response.get_data(as_text=True)
    assert "Too many failed logins" in page
    assert re.search(r"Try again in (\d+ minutes|\d+ seconds)", page), page
    assert 0 < int(response.headers["Retry-After"]) <= 300
    assert client.get("/label").status_code == 302  # not logged in
    # The real ann, from her own address, is not locked out by someone else's guesses.
    assert _attempt(app.test_client(), "ann", PASSWORDS["ann"], "10.0.3.1").status_code == 302


def test_guesses_at_one_name_from_ten_addresses_do_not_lock_its_owner_out(app):
    client = app.test_client()
    for attempt in range(10):
        assert _attempt(client, "ann", f"wrong-{attempt}", f"10.0.1.{attempt}").status_code == 401
    assert _attempt(app.test_client(), "ann", PASSWORDS["ann"], "10.0.2.1").status_code == 302


def test_ten_failed_logins_from_one_address_block_that_address_for_every_name(app):
    client = app.test_client()
    for attempt in range(10):
        assert _attempt(client, f"guess{attempt}", "whatever-it-is").status_code == 401
    assert _attempt(client, "bob", PASSWORDS["bob"]).status_code == 429
    other = app.test_client()
    assert _attempt(other, "bob", PASSWORDS["bob"], "10.9.9.9").status_code == 302


def test_a_good_login_now_and_then_does_not_reset_the_address_count(app):
    """The reported hole: 50 guesses over 10 names with a good login of the guesser's own
    every 9 never hit 429. A success clears only its name-at-address count."""
    client = app.test_client()
    statuses = []
    for attempt in range(50):
        if attempt % 9 == 8:
            statuses.append(_attempt(client, "bob", PASSWORDS["bob"]).status_code)
            if statuses[-1] == 302:
                client.post("/logout", data={"csrf_token": csrf_token(client, "/label")})
        else:
            statuses.append(_attempt(client, f"name{attempt % 10}", "not-it-1234").status_code)
    assert 429 in statuses
    assert statuses.index(429) <= 11  # the tenth failure from the address is the limit


def test_a_success_clears_its_own_count_and_the_lockout_ends_after_the_window(app):
    throttle = app.extensions["login_throttle"]
    now = [1000.0]
    throttle.clock = lambda: now[0]
    client = app.test_client()
    for attempt in range(5):
        assert _attempt(client, "ann", f"wrong-{attempt}").status_code == 401
    assert _attempt(client, "ann", PASSWORDS["ann"]).status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token(client, "/label")})
    for attempt in range(5):  # ann's count began again, the address holds 10 now
        assert _attempt(client, "ann", f"again-{attempt}", "10.0.0.2").status_code == 401
    for attempt in range(4):
        assert _attempt(client, "ann", f"more-{attempt}", "10.0.0.2").status_code == 401
    assert _attempt(client, "ann", "one-too-many", "10.0.0.2").status_code == 401
    assert _attempt(client, "ann", PASSWORDS["ann"], "10.0.0.2").status_code == 429
    now[0] += 299
    assert _attempt(client, "ann", PASSWORDS["ann"], "10.0.0.2").status_code == 429
    now[0] += 2
    assert _attempt(client, "ann", PASSWORDS["ann"], "10.0.0.2").status_code == 302


def test_refused_attempts_do_not_extend_the_lockout(app):
    """Attempts refused with 429 are not counted, so they cannot push the end further."""
    throttle = app.extensions["login_throttle"]
    client = app.test_client()
    for attempt in range(10):
        _attempt(client, "ann", f"wrong-{attempt}")
    first = throttle.retry_after("ann", "10.0.0.1")
    for _ in range(3):
        assert _attempt(client, "ann", "still-guessing").status_code == 429
    assert throttle.retry_after("ann", "10.0.0.1") <= first


def test_old_names_are_forgotten_when_the_table_grows(app):
    throttle = app.extensions["login_throttle"]
    now = [0.0]
    throttle.clock = lambda: now[0]
    throttle.MAX_KEYS = 50
    for index in range(60):
        throttle.failed(f"spray{index}", "10.1.1.1")
    now[0] += 301
    throttle.failed("late", "10.1.1.2")
    assert len(throttle._failures) <= 3


# --- who may vote on which image -----------------------------------------------------------


def _label_card(client, token) -> list[int]:
    html = client.get("/label", headers=htmx_headers(token)).get_data(as_text=True)
    return [int(i) for i in re.findall(r'src="/images/(\d+)', html)]


def _answers(app) -> int:
    db = store.connect(app.extensions["activelabel"].db_path)
    try:
        return db.execute("SELECT count(*) FROM annotations").fetchone()[0]
    finally:
        db.conn.close()


@pytest.mark.parametrize("image", ["my card", "open", "bob's card", "agreed", "unknown"])
def test_a_vote_is_taken_only_on_an_image_handed_to_the_voter(app, image):
    """May vote on this image: the voter's own card, or an image nobody holds that still
    needs a vote; not someone else's card (a single-vote project: bob holds its one place),
    not a finished image, not an image that does not exist."""
    ann, ann_token = app.test_client(), None
    ann_token = login(ann, "ann")
    bob = app.test_client()
    bob_token = login(bob, "bob")
    mine = _label_card(ann, ann_token)
    bobs = _label_card(bob, bob_token)
    db = store.connect(app.extensions["activelabel"].db_path)
    held = {r[0] for r in db.execute("SELECT image_id FROM leases")}
    nobodys = [r[0] for r in db.execute("SELECT image_id FROM queue ORDER BY image_id")
               if r[0] not in held]
    bob_votes_on = nobodys.pop()
    bob.post(f"/label/{bob_votes_on}", data={"choice": "2"}, headers=htmx_headers(bob_token))
    db.conn.close()
    target, expected = {
        "my card": (mine[0], 200),
        "open": (nobodys[0], 200),
        "bob's card": (bobs[0], 409),
        "agreed": (bob_votes_on, 409),
        "unknown": (10_000, 404),
    }[image]
    before = _answers(app)
    response = ann.post(f"/label/{target}", data={"choice": "unsure"},
                        headers=htmx_headers(ann_token))
    assert response.status_code == expected, response.get_data(as_text=True)
    assert _answers(app) == before + (1 if expected == 200 else 0)
    if expected == 409:
        assert "Not saved" in response.get_data(as_text=True)
    db = store.connect(app.extensions["activelabel"].db_path)
    try:
        assert db.execute("SELECT 1 FROM leases WHERE image_id = ? AND user_id = ?",
                          [bobs[0], store.get_user_by_name(db, "bob")["id"]]).fetchone()
        assert store.state_of(db, bob_votes_on)["status"] == "agreed"
    finally:
        db.conn.close()


def test_forged_unsure_votes_on_finished_images_change_no_label_or_export(app):
    """The attack as reported: 'unsure' posted on agreed images the annotator never saw."""
    bob = app.test_client()
    bob_token = login(bob, "bob")
    agreed = []
    for _ in range(5):
        image = _label_card(bob, bob_token)[0]
        bob.post(f"/label/{image}", data={"choice": "3"}, headers=htmx_headers(bob_token))
        agreed.append(image)
    admin = app.test_client()
    login(admin, "admin")
    before = admin.get("/export?format=csv").get_data(as_text=True)
    ann = app.test_client()
    token = login(ann, "ann")
    statuses = [ann.post(f"/label/{i}", data={"choice": "unsure"},
                         headers=htmx_headers(token)).status_code for i in agreed]
    assert statuses == [409] * 5
    assert admin.get("/export?format=csv").get_data(as_text=True) == before
    assert before.count("\n") == 6  # header and the five agreed images


def test_undo_takes_back_only_the_latest_answer(app):
    ann = app.test_client()
    token = login(ann, "ann")
    given = []
    for choice in ("1", "2"):
        image = _label_card(ann, token)[0]
        ann.post(f"/label/{image}", data={"choice": choice}, headers=htmx_headers(token))
        db = store.connect(app.extensions["activelabel"].db_path)
        given.append(store.last_answer(db, store.get_user_by_name(db, "ann")["id"])["id"])
        db.conn.close()
    older, latest = given
    refused = ann.post("/label/undo", data={"annotation_id": older}, headers=htmx_headers(token))
    assert refused.status_code == 409
    assert "not your latest answer" in refused.get_data(as_text=True)
    before = _answers(app)
    assert ann.post("/label/undo", data={"annotation_id": latest},
                    headers=htmx_headers(token)).status_code == 200
    assert _answers(app) == before + 1  # one retraction appended
    assert ann.post("/label/undo", data={"annotation_id": latest},
                    headers=htmx_headers(token)).status_code == 200  # a repeat: harmless
    assert _answers(app) == before + 1
    bob = app.test_client()
    bob_token = login(bob, "bob")
    stolen = bob.post("/label/undo", data={"annotation_id": older},
                      headers=htmx_headers(bob_token))
    assert stolen.status_code == 400 and "not one of yours" in stolen.get_data(as_text=True)
