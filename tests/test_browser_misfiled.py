"""The quality page in Chromium: twenty 0s that look alike were filed under 6 in a
folder-per-class set of real digits; the page shows them as one finding with their
thumbnails, and with the row focused one key (r) sends the whole group to review.
Screenshots: test-output/misfiled.png, misfiled-sent.png."""

from __future__ import annotations

import pytest
from browser_support import TIMEOUT_MS, chromium, needs_chromium, screenshot, serving
from conftest import PASSWORDS
from test_misfiled_groups import audited_project

from server import store
from server.projects import open_db

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium


def test_one_key_sends_a_misfiled_group_to_review(tmp_path, digits):
    project, result, _moved, _classes = audited_project(tmp_path, digits, 0, 6, True)
    group = result["suspects"]["groups"][0]
    with serving(project.root, tmp_path / "server.log", "--no-worker") as base, \
            chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{base}/admin/quality/")
        page.fill("input[name=name]", "admin")
        page.fill("input[name=password]", PASSWORDS["admin"])
        with page.expect_navigation():
            page.click("form.login button[type=submit]")
        row = page.locator("#groups tbody tr").first
        finding = row.locator("td.finding").inner_text()
        assert finding.startswith(f"{len(group['image_ids'])} images filed as 6 look like 0")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#groups img')]"
            ".every(i => i.complete && i.naturalWidth > 0)")
        screenshot(page, "misfiled")
        row.click()
        with page.expect_navigation():
            page.keyboard.press("r")
        flash = page.inner_text("#flash")
        assert "images filed as 6 that look like 0 to review" in flash, flash
        assert page.locator("#groups tbody tr td.waiting").first.inner_text() == str(
            len(group["image_ids"]))
        screenshot(page, "misfiled-sent")
    db = open_db(project)
    try:
        assert all(store.state_of(db, i)["status"] == "disputed" for i in group["image_ids"])
    finally:
        db.conn.close()
