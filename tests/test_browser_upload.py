"""An admin uploads images on the admin page in a real browser: a zip of 1,000 real digit
PNGs through the file input, with the progress bar moving as the bytes go (the upload is
throttled through Chromium's DevTools so that there is a middle to see), then the import
report in the panel; one image dropped on the drop zone; a dropped file that is not an
image, refused with its reason in the panel. Screenshots: test-output/upload-*.png.

A real server (`activelabel serve`, waitress, with its worker) in a subprocess, driven by
headless Chromium through Playwright, as in test_browser_csp.py.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from pathlib import Path

import pytest
from browser_support import (
    TIMEOUT_MS,
    chromium,
    needs_chromium,
    screenshot,
    serving,
    two_vote_digits_project,
)
from sklearn.datasets import load_digits

from server import store
from server.dataset.demo import digit_image

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium

IN_PROJECT = 20  # digits 0..19 are in the project before the upload
ZIPPED = 1000
ADMIN = ("boss", "boss-password-1")
IMPORT_MS = 180_000  # checking and importing 1,000 images on a busy two-core CPU
UPLOAD_BYTES_PER_S = 400_000  # about 1.8 MB of zip: four or five seconds of progress


def png(digits, index: int) -> bytes:
    buffer = io.BytesIO()
    digit_image(digits.images[index]).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("upload")
    project = two_vote_digits_project(root, {ADMIN[0]: ("admin", ADMIN[1])}, IN_PROJECT)
    with serving(project, root / "server.log") as base:
        yield {"base": base, "project": project, "root": root}


def image_count(project) -> int:
    db = store.connect(project / "activelabel.db", migrate=False)
    try:
        return store.image_count(db)
    finally:
        db.conn.close()


def test_an_admin_uploads_a_zip_of_1000_images_with_a_moving_progress_bar(server):
    digits = load_digits()
    archive = server["root"] / "digits.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for index in range(IN_PROJECT, IN_PROJECT + ZIPPED):
            zipped.writestr(f"digits/digit-{index:04d}.png", png(digits, index))
    complaints: list[str] = []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.on("console", lambda m: complaints.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: complaints.append(f"pageerror: {error}"))
        page.goto(f"{server['base']}/admin/")
        page.fill("input[name=name]", ADMIN[0])
        page.fill("input[name=password]", ADMIN[1])
        with page.expect_navigation():
            page.click("form.login button[type=submit]")
        assert page.url.endswith("/admin/")

        # The zip through the file input, the upload slowed to a modem's pace.
        devtools = context.new_cdp_session(page)
        devtools.send("Network.enable")
        devtools.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1,
            "uploadThroughput": UPLOAD_BYTES_PER_S})
        page.set_input_files("#upload-form input[type=file]", str(archive))
        assert page.get_attribute("#upload-progress", "value") == "0"
        page.click("#upload-form button[type=submit]")
        page.wait_for_function(
            "() => { const v = Number(document.querySelector('#upload-progress')"
            ".getAttribute('value')); return v >= 20 && v < 100; }")
        page.locator("#upload").scroll_into_view_if_needed()
        assert 20 <= int(page.get_attribute("#upload-progress", "value")) < 100
        assert "Uploading…" in page.inner_text("#upload-state")
        _keep(page, "upload-progress")
        page.wait_for_function(
            "() => document.querySelector('#upload-progress').getAttribute('value') === '100'")
        page.wait_for_selector("#upload-result a", timeout=IMPORT_MS)
        devtools.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        result = page.inner_text("#upload-result")
        assert f"{ZIPPED} added (0 labeled from class folders), 0 duplicates, 0 skipped" in result
        assert page.inner_text("#upload-state") == "Imported: the report is below."
        _keep(page, "upload-report")
        assert image_count(server["project"]) == IN_PROJECT + ZIPPED

        # One image dropped on the zone is sent at once.
        _drop(page, "dropped.png", png(digits, 1500))
        page.wait_for_function(
            "() => document.querySelector('#upload-result').innerText.includes(': 1 added')")
        assert image_count(server["project"]) == IN_PROJECT + ZIPPED + 1

        # A dropped file that is not an image: the reason in the panel, nothing imported.
        _drop(page, "holiday.png", b"<html>not a picture</html>")
        page.wait_for_selector("#upload-state.failed")
        refusal = page.inner_text("#upload-state")
        assert "holiday.png: not a recognised image file" in refusal
        assert "Nothing in the project changed" in refusal
        assert page.inner_text("#upload-result") == ""  # not the previous upload's report
        _keep(page, "upload-refused")
        assert image_count(server["project"]) == IN_PROJECT + ZIPPED + 1
        context.close()
    # The refused upload's 400 is logged by Chromium; nothing else may be.
    assert [c for c in complaints if "400" not in c] == []


def _drop(page, name: str, content: bytes) -> None:
    """Drop one file on the drop zone, as a person dragging it from their desktop does."""
    page.evaluate(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
            const zone = document.querySelector("#drop-zone");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true,
                                                        cancelable: true}));
            }
        }""",
        [name, list(content)],
    )


def _keep(page, name: str) -> None:
    """The whole page in test-output/, and a copy with the upload panel alone, legible at a
    glance, in /tmp, where the issue asks for the screenshots to be looked at."""
    whole = screenshot(page, name)
    shutil.copy(whole, Path(tempfile.gettempdir()) / whole.name)
    page.locator("#upload").screenshot(path=str(Path(tempfile.gettempdir()) / f"{name}-panel.png"))
