"""The pages under their Content-Security-Policy in a real browser: labeling, the review card,
the cluster grid (with its polling status panel), verify, quality, agreement and admin
load and work with nothing refused. Chromium reports each violation (an inline style, an
eval, a script or image from elsewhere) on the console, so the test listens there.

A real server (`activelabel serve`, waitress, with its worker) in a subprocess, driven by
headless Chromium through Playwright, as in test_browser.py.
"""

from __future__ import annotations

import pytest
from browser_support import (
    TIMEOUT_MS,
    chromium,
    needs_chromium,
    serving,
    two_vote_digits_project,
)

from server import store

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium

IMAGES = 30
JOB_MS = 240_000  # a clustering on a busy two-core CPU
USERS = {  # name -> (role, password)
    "ann1": ("annotator", "ann1-password-1"),
    "ann2": ("annotator", "ann2-password-1"),
    "boss": ("admin", "boss-password-1"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A digits project needing two votes per image (so a disagreement reaches review),
    served with its worker; always stopped."""
    root = tmp_path_factory.mktemp("csp")
    project = two_vote_digits_project(root, USERS, IMAGES)
    with serving(project, root / "server.log") as base:
        yield {"base": base, "project": project}


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


class Watched:
    """A page in a fresh context, with everything its console and its scripts complain
    about, and the policy each document it loaded came with."""

    def __init__(self, browser, server):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.base = server["base"]
        self.complaints: list[str] = []
        self.policies: dict[str, str | None] = {}
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.complaints.append(f"pageerror: {error}"))
        self.page.on("response", self._response)

    def _console(self, message) -> None:
        if message.type in ("error", "warning") or "Content Security Policy" in message.text:
            self.complaints.append(f"{message.type} on {self.page.url}: {message.text}")

    def _response(self, response) -> None:
        if response.request.resource_type == "document":
            self.policies[response.url] = response.headers.get("content-security-policy")

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.base}{path}")
        self.page.wait_for_load_state("load")

    def log_in(self, name: str, path: str) -> None:
        self.goto(path)
        assert "/login" in self.page.url
        self.page.fill("input[name=name]", name)
        self.page.fill("input[name=password]", USERS[name][1])
        with self.page.expect_navigation():
            self.page.click("form.login button[type=submit]")
        assert self.page.url.endswith(path), (self.page.url, self.page.inner_text("#flash"))

    def card_id(self, old: int | None, what: str) -> int:
        """Wait until the card shows an image other than `old`, loaded; its id."""
        try:
            self.page.wait_for_function(
                "old => { const c = document.querySelector('#card');"
                " const i = c && c.querySelector('img.current');"
                " return c && Number(c.dataset.imageId || 0) !== (old || 0)"
                "   && i && i.complete && i.naturalWidth > 0; }",
                arg=old,
            )
        except sync_api.TimeoutError:
            pytest.fail(f"timed out waiting for {what}; complaints: {self.complaints}")
        return int(self.page.get_attribute("#card", "data-image-id"))

    def close(self) -> None:
        self.context.close()


def votes(server) -> list[dict]:
    db = store.connect(server["project"] / "activelabel.db", migrate=False)
    try:
        return list(db.query(
            "SELECT u.name, a.image_id, a.kind, c.name AS label FROM annotations a"
            " JOIN users u ON u.id = a.user_id LEFT JOIN classes c ON c.id = a.class_id"
            " ORDER BY a.id"))
    finally:
        db.conn.close()


def test_the_pages_work_under_their_content_security_policy(browser, server):
    ann1, ann2, boss = (Watched(browser, server) for _ in range(3))
    try:
        # Labeling by keyboard: both annotators get the same image (it needs both votes)
        # and disagree, so it goes to review.
        ann1.log_in("ann1", "/label")
        ann2.log_in("ann2", "/label")
        image = ann1.card_id(None, "ann1's card")
        assert ann2.card_id(None, "ann2's card") == image
        ann1.page.keyboard.press("1")
        ann2.page.keyboard.press("7")
        assert ann1.card_id(image, "the card after ann1 pressed 1") != image
        assert ann2.card_id(image, "the card after ann2 pressed 7") != image
        recorded = {(v["name"], v["image_id"], v["kind"], v["label"]) for v in votes(server)}
        assert recorded == {("ann1", image, "label", "1"), ("ann2", image, "label", "7")}

        # The review card, settled by keyboard too.
        boss.log_in("boss", "/review/")
        assert boss.card_id(None, "the review card") == image
        boss.page.keyboard.press("7")
        boss.page.wait_for_function(
            "old => Number(document.querySelector('#card').dataset.imageId || 0) !== old",
            arg=image)
        assert ("boss", image) in {(v["name"], v["image_id"]) for v in votes(server)}

        # The cluster grid: the status panel polls (hx-trigger load) until the worker is
        # done, then the grid of thumbnails comes.
        boss.goto("/bootstrap/")
        boss.page.click("#clustering-status button[type=submit]")
        boss.page.wait_for_selector("#grid-card .thumbs", timeout=JOB_MS)
        boss.page.wait_for_function(
            "() => { const t = [...document.querySelectorAll('#grid-card .thumbs img')];"
            " return t.length > 0 && t.every(i => i.complete && i.naturalWidth > 0); }")
        boss.page.keyboard.press("ArrowRight")  # grid.js handles the keys
        assert boss.page.evaluate("() => document.activeElement.type") == "checkbox"

        for path in ("/verify/", "/admin/quality/", "/admin/agreement/", "/admin/"):
            boss.goto(path)
            assert boss.page.locator("main").count() == 1

        for watched in (ann1, ann2, boss):
            assert watched.policies, "no page was loaded"
            for url, policy in watched.policies.items():
                assert policy and "script-src 'self'" in policy, (url, policy)
            assert watched.complaints == []
    finally:
        for watched in (ann1, ann2, boss):
            watched.close()
