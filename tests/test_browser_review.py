"""Several annotators in real browsers: two annotators label the same images with the keyboard
(two votes per image), their disagreements are disputed, a reviewer settles one with the
keyboard, the admin's agreement page shows Fleiss' kappa and Krippendorff's alpha as
statsmodels and the krippendorff package compute them from the stored votes, and the export
holds only consensus labels.

A real server (`activelabel serve`, waitress) in a subprocess, driven by headless Chromium
through Playwright, as in test_browser.py. Screenshots of the review and agreement pages are
saved under test-output/ at the repository root.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile

import krippendorff
import numpy as np
import pytest
from browser_support import (
    TIMEOUT_MS,
    chromium,
    needs_chromium,
    screenshot,
    serving,
    two_vote_digits_project,
)
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from server import store

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium

IMAGES = 30

USERS = {  # name -> (role, password)
    "ann1": ("annotator", "ann1-password-1"),
    "ann2": ("annotator", "ann2-password-1"),
    "rev": ("reviewer", "rev-password-1"),
    "boss": ("admin", "boss-password-1"),
}
# The keys each annotator presses on the images shown, in order: the second and the fourth
# image get different answers (disputed), the others the same one (agreed).
KEYS = [("3", "3"), ("1", "7"), ("2", "2"), ("4", "5"), ("6", "6")]
REVIEWER_KEY = "7"  # the reviewer's final label for the first disputed image

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A digits project needing two votes per image, with two annotators, a reviewer and an
    admin, served by `activelabel serve` on a free port; always stopped."""
    root = tmp_path_factory.mktemp("review")
    project = two_vote_digits_project(root, USERS, IMAGES)

    with serving(project, root / "server.log", "--no-worker") as base:
        yield {"base": base, "project": project}


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def new_page(browser):
    """new_page() -> a page in a fresh browser context (own cookies); all closed afterwards."""
    made = []

    def make():
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(TIMEOUT_MS)
        made.append(context)
        return context.new_page()

    yield make
    for context in made:
        context.close()


def log_in(page, server, name: str, path: str) -> None:
    """Open `path`; the login form comes first and leads back there."""
    page.goto(f"{server['base']}{path}")
    assert "/login" in page.url
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", USERS[name][1])
    with page.expect_navigation():
        page.click("form.login button[type=submit]")
    assert page.url.endswith(path), (page.url, page.inner_text("#flash"))


def shown_id(page) -> int | None:
    value = page.evaluate("() => document.querySelector('#card')?.dataset.imageId ?? null")
    return None if value is None else int(value)


def wait_for_card(page, old: int | None, what: str) -> int:
    """Wait until the card shows another image than `old`, its image loaded; its id."""
    try:
        page.wait_for_function(
            "old => { const c = document.querySelector('#card');"
            " const i = c && c.querySelector('img.current');"
            " return c && Number(c.dataset.imageId || 0) !== (old || 0)"
            "   && (!i || (i.complete && i.naturalWidth > 0)); }",
            arg=old,
        )
    except sync_api.TimeoutError:
        pytest.fail(f"timed out waiting for {what}; the card: "
                    f"{page.evaluate('() => document.querySelector(`#card`)?.outerHTML')}")
    return shown_id(page)


def page_figure(page, selector: str) -> str:
    """The number a figure on the page shows (its first one), as text."""
    text = page.inner_text(selector)
    match = re.match(r"\s*(-?\d+\.\d{3})\b", text)
    assert match, f"{selector} shows {text!r}"
    return match.group(1)


def test_two_annotators_disagree_the_reviewer_decides_agreement_and_export_follow(
    server, new_page
):
    base = server["base"]
    ann1, ann2, reviewer = new_page(), new_page(), new_page()
    log_in(reviewer, server, "rev", "/review/")
    assert "Nothing to review" in reviewer.inner_text("#card")
    log_in(ann1, server, "ann1", "/label")
    log_in(ann2, server, "ann2", "/label")

    # Both annotators are shown the same images (each needs both votes) and answer them
    # with the keyboard, at the same time.
    answered: list[tuple[int, str, str]] = []  # (image id, ann1's class, ann2's class)
    for key1, key2 in KEYS:
        now = wait_for_card(ann1, None, "ann1's card")
        assert wait_for_card(ann2, None, "ann2's card") == now
        ann1.keyboard.press(key1)
        ann2.keyboard.press(key2)
        after1 = wait_for_card(ann1, now, f"the card after ann1 pressed {key1}")
        after2 = wait_for_card(ann2, now, f"the card after ann2 pressed {key2}")
        assert after1 == after2, "the annotators were handed different images"
        answered.append((now, key1, key2))
    for page in (ann1, ann2):
        assert page.locator("#flash .flash.error").count() == 0

    project = server["project"]
    db = store.connect(project / "activelabel.db", migrate=False)
    try:
        states = {image: store.state_of(db, image) for image, _, _ in answered}
        names = {c["id"]: c["name"] for c in store.classes(db)}
    finally:
        db.conn.close()
    disputed = [image for image, a, b in answered if a != b]
    agreed = {image: a for image, a, b in answered if a == b}
    assert len(disputed) == 2
    for image, state in states.items():
        if image in agreed:
            assert (state["status"], names[state["class_id"]]) == ("agreed", agreed[image])
        else:
            assert state["status"] == "disputed", state
    votes_on = {image: {"ann1": a, "ann2": b} for image, a, b in answered}

    # The reviewer opens the review queue: a disputed image, with both votes and who gave
    # them.
    reviewer.goto(f"{base}/review/")
    first = wait_for_card(reviewer, None, "the review card")
    assert first in disputed
    (second,) = set(disputed) - {first}
    assert reviewer.locator("#card .left").inner_text() == "2"
    assert "disputed" in reviewer.locator("#card .consensus-status").inner_text()
    rows = [r.locator("td").all_inner_texts()[:2]
            for r in reviewer.locator("#card table.vote-list tbody tr").all()]
    # Listed in the order the votes came (both annotators pressed at once: either may be first).
    assert sorted(rows) == [["ann1", votes_on[first]["ann1"]],
                            ["ann2", votes_on[first]["ann2"]]], rows
    for button in reviewer.locator("#card form.choices button[data-key]").all():
        assert button.is_visible()
    shot_review = screenshot(reviewer, "review")

    # The final label by keyboard; the next disputed image follows.
    reviewer.keyboard.press(REVIEWER_KEY)
    assert wait_for_card(reviewer, first, "the next disputed image") == second
    assert reviewer.locator("#card .left").inner_text() == "1"
    reviewer.goto(f"{base}/review/{first}")
    assert reviewer.locator("#card .consensus-status").inner_text() == "adjudicated"
    assert f"consensus {REVIEWER_KEY}" in reviewer.locator("#card p.status").inner_text()
    final_row = reviewer.locator("#card table.vote-list tbody tr.adjudicate td").all_inner_texts()
    assert final_row[:2] == ["rev", f"final: {REVIEWER_KEY}"], final_row
    screenshot(reviewer, "review-adjudicated")
    db = store.connect(project / "activelabel.db", migrate=False)
    try:
        state = store.state_of(db, first)
        assert (state["status"], names[state["class_id"]]) == ("adjudicated", REVIEWER_KEY)
        assert store.state_of(db, second)["status"] == "disputed"
        stored_votes = store.all_votes(db)
        users = {u["id"]: u["name"] for u in store.list_users(db)}
    finally:
        db.conn.close()

    # The admin's agreement page: Fleiss' kappa and Krippendorff's alpha as statsmodels
    # and krippendorff compute them from the same votes.
    images = sorted({image for image, _, _ in stored_votes})
    raters = sorted({users[user] for _, user, _ in stored_votes})
    assert raters == ["ann1", "ann2"] and images == sorted(image for image, _, _ in answered)
    grid = np.full((len(raters), len(images)), np.nan)
    for image, user, class_id in stored_votes:
        grid[raters.index(users[user]), images.index(image)] = class_id
    table, _ = aggregate_raters(grid.T.astype(int))  # every image has both votes
    expected_kappa = fleiss_kappa(table, method="fleiss")
    expected_alpha = krippendorff.alpha(reliability_data=grid,
                                        level_of_measurement="nominal")

    admin = new_page()
    log_in(admin, server, "boss", "/admin/agreement/")
    assert page_figure(admin, "dd.fleiss") == f"{expected_kappa:.3f}"
    assert f"({len(images)} images with 2 votes each)" in admin.inner_text("dd.fleiss")
    assert page_figure(admin, "dd.alpha") == f"{expected_alpha:.3f}"
    overview = admin.inner_text("#overview")
    assert f"{2 * len(images)} votes; {len(images)} images have two or more." in overview
    assert "1 adjudicated" in overview and "1 disputed" in overview
    per_annotator = {
        cells[0]: cells for cells in
        (r.locator("td").all_inner_texts() for r in admin.locator("#annotators tbody tr").all())
    }
    assert per_annotator["ann1"][2] == per_annotator["ann2"][2] == str(len(images))
    admin.wait_for_function(
        "() => { const i = document.querySelector('#confusion img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    shot_agreement = screenshot(admin, "agreement")

    # The export: only consensus labels, the adjudicated image with the reviewer's label;
    # the disputed one is left out and listed in DISPUTED.csv.
    db = store.connect(project / "activelabel.db", migrate=False)
    try:
        path_of = {image: store.get_image(db, image)["path"] for image, _, _ in answered}
    finally:
        db.conn.close()
    response = admin.request.get(f"{base}/export?format=csv")
    assert response.ok, response.status
    exported = {row["path"]: row for row in csv.DictReader(io.StringIO(response.text()))}
    expected = {path_of[image]: label for image, label in agreed.items()}
    expected[path_of[first]] = REVIEWER_KEY
    assert {path: row["label"] for path, row in exported.items()} == expected
    assert exported[path_of[first]]["status"] == "adjudicated"
    assert json.loads(exported[path_of[first]]["voters"]) == votes_on[first]
    assert {exported[path_of[image]]["status"] for image in agreed} == {"agreed"}
    assert path_of[second] not in exported

    response = admin.request.get(f"{base}/export?format=imagefolder")
    assert response.ok, response.status
    with zipfile.ZipFile(io.BytesIO(response.body())) as archive:
        members = archive.namelist()
        report = list(csv.DictReader(io.StringIO(archive.read("DISPUTED.csv").decode())))
    image_members = [m for m in members if m.count("/") == 2 and not m.endswith("/")]
    assert sorted(m.split("/")[1] for m in image_members) == sorted(expected.values())
    assert not any(m.split("/")[2].startswith(f"{second}-") for m in image_members)
    assert [row["path"] for row in report] == [path_of[second]]
    assert report[0]["status"] == "disputed"
    assert json.loads(report[0]["voters"]) == votes_on[second]

    assert shot_review.exists() and shot_agreement.exists()
