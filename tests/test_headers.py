"""Security headers on every kind of response, and state-changing requests from another
site's page refused, through the real app with CSRF on."""

from __future__ import annotations

import re

import pytest
from conftest import PASSWORDS, card_images, htmx_headers

from server import store

EXPECTED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# What the policy must say; the browser test checks that the pages work under it.
POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
}
OWN_ORIGIN = "http://localhost"  # the test client's requests go to http://localhost/


def assert_secured(response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, dict(response.headers))
    policy = response.headers.get("Content-Security-Policy")
    assert policy, dict(response.headers)
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    for directive, value in POLICY.items():
        assert directives.get(directive) == value, (directive, policy)
    assert "unsafe" not in policy


@pytest.fixture
def db(project):
    connection = store.connect(project.db_path)
    yield connection
    connection.conn.close()


def token_on(page) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.get_data(as_text=True))
    assert match, page.get_data(as_text=True)
    return match.group(1)


def annotation_count(db) -> int:
    return db.execute("SELECT count(*) FROM annotations").fetchone()[0]


def a_class(db) -> int:
    return store.classes(db)[0]["id"]


def first_image(client, token) -> int:
    html = client.get("/label", headers=htmx_headers(token)).get_data(as_text=True)
    return card_images(html)[0]


# --- every kind of response carries the headers ----------------------------------------


def test_the_login_page_and_a_static_file_carry_the_headers(client):
    login_page = client.get("/login")
    assert login_page.status_code == 200
    assert_secured(login_page)
    with client.get("/static/app.js") as static_file:
        assert static_file.status_code == 200
        assert_secured(static_file)
    with client.get("/static/vendor/htmx/htmx.min.js") as vendored:
        assert vendored.status_code == 200
        assert_secured(vendored)


def test_a_redirect_to_the_login_page_and_a_404_carry_the_headers(client):
    redirect = client.get("/label")
    assert redirect.status_code == 302
    assert_secured(redirect)
    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    assert "There is nothing here" in missing.get_data(as_text=True)  # the error page
    assert_secured(missing)


def test_pages_fragments_images_errors_and_exports_carry_the_headers(as_user):
    client, token = as_user("admin")
    page = client.get("/label")
    assert page.status_code == 200 and "<html" in page.get_data(as_text=True)
    assert_secured(page)
    fragment = client.get("/label", headers=htmx_headers(token))
    assert fragment.get_data(as_text=True).startswith('<section id="card"')
    assert_secured(fragment)
    with client.get(f"/images/{first_image(client, token)}") as image:
        assert image.status_code == 200 and image.mimetype.startswith("image/")
        assert_secured(image)
    with client.get("/admin/agreement/confusion.png") as chart:
        assert chart.status_code in (200, 404)
        assert_secured(chart)
    htmx_error = client.post("/label/999999", data={"choice": "skip"},
                             headers=htmx_headers(token))
    assert htmx_error.status_code == 404 and htmx_error.mimetype == "text/plain"
    assert_secured(htmx_error)
    with client.get("/export") as export:
        assert export.status_code == 200
        assert "attachment" in export.headers["Content-Disposition"]
        assert_secured(export)
    for path in ("/admin/", "/admin/quality/", "/admin/agreement/", "/admin/rounds/",
                 "/review/", "/bootstrap/", "/verify/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_secured(response)


def test_the_page_tells_htmx_not_to_eval_or_inject_styles(client):
    html = client.get("/login").get_data(as_text=True)
    assert (
        """<meta name="htmx-config" content='{"allowEval": false, "includeIndicatorStyles":"""
        """ false}'>""" in html
    )


# --- Origin on state-changing requests -------------------------------------------------


def test_a_vote_from_another_site_is_refused_and_nothing_is_written(as_user, db):
    client, token = as_user("ann")
    image = first_image(client, token)
    for origin in ("https://evil.example", "http://localhost:8080", "null",
                   "https://localhost"):
        response = client.post(
            f"/label/{image}", data={"choice": str(a_class(db))},
            headers={**htmx_headers(token), "Origin": origin},
        )
        assert response.status_code == 403, origin
        assert response.get_data(as_text=True) == (
            "Cross-site request refused; nothing was saved."
        )
        assert_secured(response)
    assert annotation_count(db) == 0
    # Reading is not refused: a link from another site still opens the page.
    assert client.get("/label", headers={"Origin": "https://evil.example"}).status_code == 200


def test_a_full_page_post_from_another_site_gets_the_error_page(as_user, db):
    client, token = as_user("ann")
    image = first_image(client, token)
    response = client.post(
        f"/label/{image}", data={"choice": str(a_class(db)), "csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    html = response.get_data(as_text=True)
    assert "<html" in html and "Cross-site request refused; nothing was saved." in html
    assert annotation_count(db) == 0


def test_a_login_from_another_site_is_refused_before_the_token_is_checked(client):
    response = client.post(
        "/login", data={"name": "ann", "password": PASSWORDS["ann"]},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "Cross-site request refused" in response.get_data(as_text=True)


def test_a_vote_from_this_site_or_without_origin_is_recorded(as_user, db):
    client, token = as_user("ann")
    html = client.get("/label", headers=htmx_headers(token)).get_data(as_text=True)
    first, second = card_images(html)
    response = client.post(
        f"/label/{first}", data={"choice": str(a_class(db))},
        headers={**htmx_headers(token), "Origin": OWN_ORIGIN},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_secured(response)
    assert annotation_count(db) == 1
    # No Origin at all (curl, the CLI, older browsers): the CSRF token still guards it.
    response = client.post(f"/label/{second}", data={"choice": str(a_class(db))},
                           headers=htmx_headers(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert annotation_count(db) == 2


def test_behind_a_proxy_the_origin_is_compared_with_the_host_flask_sees(app, db):
    """The scheme and host Flask sees (what ProxyFix makes of X-Forwarded-*) are the ones
    the browser's Origin names."""
    proxied = "https://label.example.org"
    # Over HTTPS Flask-WTF also wants a same-site Referer, which Referrer-Policy
    # same-origin keeps sending (no-referrer would refuse every form behind TLS).
    referer = {"Referer": f"{proxied}/label"}
    client = app.test_client()
    token = token_on(client.get("/login", base_url=proxied))
    logged_in = client.post(
        "/login", data={"name": "ann", "password": PASSWORDS["ann"], "csrf_token": token},
        headers={"Origin": proxied, **referer}, base_url=proxied,
    )
    assert logged_in.status_code == 302, logged_in.get_data(as_text=True)
    token = token_on(client.get("/label", base_url=proxied))
    html = client.get("/label", headers=htmx_headers(token), base_url=proxied)
    image = card_images(html.get_data(as_text=True))[0]
    vote = {"choice": str(a_class(db))}
    # The same origin with another scheme, or the backend's own address, is another site.
    for origin in ("http://label.example.org", OWN_ORIGIN):
        refused = client.post(f"/label/{image}", data=vote, base_url=proxied,
                              headers={**htmx_headers(token), **referer, "Origin": origin})
        assert refused.status_code == 403, origin
    assert annotation_count(db) == 0
    response = client.post(f"/label/{image}", data=vote, base_url=proxied,
                           headers={**htmx_headers(token), **referer, "Origin": proxied})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert annotation_count(db) == 1
