"""Auto-labels in Chromium, as a new user would: after a round on 150 real digits the admin
previews the model's labels at a target precision, starts the run (the worker does it),
an annotator answers the spot check on the labeling screen (no prediction shown), and the
admin page shows the measured accuracy with its interval; the admin page's export with the
model's labels holds a LABELS.md that matches. Screenshots: test-output/autolabel-preview.png,
autolabel-measured.png (and autolabel-LABELS.md)."""

from __future__ import annotations

import csv
import io
import shutil
import zipfile

import pytest
from browser_support import TIMEOUT_MS, chromium, needs_chromium, screenshot, serving
from conftest import PASSWORDS
from test_autolabel import trained  # noqa: F401 (the module's trained project, a fixture)
from test_browser import class_keys, press, wait_image_loaded
from test_rounds import Data

from server import store
from server.config import Project

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium


def log_in(page, base: str, name: str, where: str) -> None:
    page.goto(f"{base}{where}")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    with page.expect_navigation():
        page.click("form.login button[type=submit]")


def preview(admin, target: str) -> tuple[int, str]:
    """Type the target, press Preview: (the images it would label, the summary line)."""
    admin.fill("input[name=target]", target)
    with admin.expect_navigation():
        admin.click("#plan button[type=submit]")
    summary = admin.inner_text("#plan > p")
    return int(summary.split("would be labeled")[0].split(":")[-1].split()[0]), summary


def run_and_wait(admin, planned: int) -> None:
    """Press the run button; the status panel polls the job until the worker has done it."""
    with admin.expect_navigation():
        admin.click(f"text=Auto-label {planned} images")
    admin.wait_for_function(
        "() => document.querySelector('#autolabel-status').innerText.includes("
        "'images labeled by the model')", timeout=120_000)


def test_preview_run_spot_check_and_the_measured_accuracy(trained, tmp_path, digits):  # noqa: F811
    shutil.copytree(trained, tmp_path / "copy", symlinks=True)
    project = Project.open(tmp_path / "copy" / "project")
    data = Data(project, digits)
    with serving(project.root, tmp_path / "server.log") as base, chromium() as browser:
        admin = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
        admin.set_default_timeout(TIMEOUT_MS)
        log_in(admin, base, "admin", "/admin/autolabel/")
        planned, summary = preview(admin, "0.95")
        assert planned > 0, summary
        screenshot(admin, "autolabel-preview")
        run_and_wait(admin, planned)
        sampled = {r[0] for r in data.db.execute("SELECT image_id FROM spot_checks")}
        assert sampled

        annotator = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        annotator.set_default_timeout(TIMEOUT_MS)
        log_in(annotator, base, "ann", "/label")
        wait_image_loaded(annotator)
        keys = {name: key for key, name in class_keys(annotator).items()}
        for _ in range(len(sampled)):
            shown = int(annotator.eval_on_selector("#card", "c => c.dataset.imageId"))
            assert shown in sampled, "the spot check comes first"
            assert "Model suggests" not in annotator.inner_text("#card")
            press(annotator, keys[data.truth[shown]])
        names = {v: k for k, v in data.classes.items()}
        model = dict(data.db.execute(
            "SELECT a.image_id, a.class_id FROM annotations a WHERE a.kind = 'auto'"))
        right = sum(names[model[i]] == data.truth[i] for i in sampled)

        admin.reload()
        overall = admin.locator("#measured tbody tr").last
        cells = [c.inner_text() for c in overall.locator("td").all()]
        assert cells[0] == "All" and cells[2] == f"{len(sampled)} of {len(sampled)}", cells
        assert cells[3] == str(right)
        assert cells[4] == f"{100 * right / len(sampled):.1f}%"
        screenshot(admin, "autolabel-measured")

        # The export from the admin page, with the model's labels: LABELS.md matches.
        admin.goto(f"{base}/admin/")
        admin.select_option("#export select[name=labels]", "all")
        with admin.expect_download() as download:
            admin.click("#export button[type=submit]")
        path = tmp_path / "export.zip"
        download.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        summary = archive.read("LABELS.md").decode()
        rows = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
    model = sum(r["source"] == "model" for r in rows)
    people = sum(r["source"] == "human" for r in rows)
    standing = data.db.execute("SELECT count(*) FROM image_state WHERE status = 'auto'"
                               ).fetchone()[0]
    assert model == standing and people == 150 + len(sampled)
    assert f"{people} labeled by people" in summary and f"{model} by the model" in summary
    (screenshot.__globals__["OUTPUT"] / "autolabel-LABELS.md").write_text(summary)


def test_finishing_the_dataset_from_the_page(trained, tmp_path, digits):  # noqa: F811
    """The page's other mode: finish the dataset at a share of all its labels right; the
    preview says what the dataset is then expected to be, the run labels every image the
    round can measure, and once the spot check is answered the page gives the dataset's
    measured share right. Screenshots: autolabel-finish-preview.png, -measured.png."""
    from test_autolabel_finish import reachable

    shutil.copytree(trained, tmp_path / "copy", symlinks=True)
    project = Project.open(tmp_path / "copy" / "project")
    data = Data(project, digits)
    target = reachable(data.db)
    with serving(project.root, tmp_path / "server.log") as base, chromium() as browser:
        admin = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
        admin.set_default_timeout(TIMEOUT_MS)
        log_in(admin, base, "admin", "/admin/autolabel/")
        admin.check("input[name=mode][value=finish]")
        planned, summary = preview(admin, f"{target:g}")
        expected = admin.inner_text("#finish-summary")
        assert "of its labels expected right" in expected, expected
        assert planned > 0 and "finishing the dataset at" in summary, summary
        screenshot(admin, "autolabel-finish-preview")
        run_and_wait(admin, planned)
        # The annotators answer the spot check (the labeling screen's part is tested above).
        sampled = [r[0] for r in data.db.execute("SELECT image_id FROM spot_checks")]
        for image_id in store.next_images(data.db, data.user("ann"), n=len(sampled)):
            store.add_handed_vote(data.db, data.user("ann"), image_id, "label",
                                  data.classes[data.truth[image_id]])
        admin.reload()
        shown = admin.inner_text("#dataset-estimate")
        images = store.image_count(data.db)
        alone = planned - len(sampled)  # the answered spot checks are people's labels now
        assert f"{images} images, {alone} labeled by the model alone" in shown, shown
        assert f"asked {100 * target:.1f}%" in shown
        screenshot(admin, "autolabel-finish-measured")
