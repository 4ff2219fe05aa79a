"""The agreement page in Chromium: three people voted on real digits, one of them answers 9
for half of the 4s; the page lists that annotator and pair first, and with the row focused
one key (r) sends their answers on it to review. Screenshot: test-output/confused.png."""

from __future__ import annotations

import pytest
from browser_support import TIMEOUT_MS, chromium, needs_chromium, screenshot, serving
from test_confused_annotators import build_voted, password

from server import store
from server.annotators import agreement_report

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium


def test_one_key_sends_the_confused_answers_to_review(tmp_path, digits):
    project, db, ids, _, _ = build_voted(tmp_path, digits)
    try:
        first = agreement_report(db).confused[0]
        with serving(project.root, tmp_path / "server.log", "--no-worker") as base, \
                chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{base}/admin/agreement/")
            page.fill("input[name=name]", "admin")
            page.fill("input[name=password]", password("admin"))
            with page.expect_navigation():
                page.click("form.login button[type=submit]")
            row = page.locator("#confused tbody tr").first
            assert row.locator("td").all_inner_texts()[:3] == ["cat", "9", "4"]
            page.wait_for_function(
                "() => [...document.querySelectorAll('#confused img')]"
                ".every(i => i.complete && i.naturalWidth > 0)")
            screenshot(page, "confused")
            row.click()
            with page.expect_navigation():
                page.keyboard.press("r")
            flash = page.inner_text("#flash")
            assert "of cat's answers" in flash and "to review" in flash, flash
            screenshot(page, "confused-sent")
        assert all(store.state_of(db, i)["status"] == "disputed" for i in first["images"])
    finally:
        db.conn.close()
