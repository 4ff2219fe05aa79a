"""End to end in a real browser: a real server (`activelabel serve`, waitress) in a
subprocess on a demo project, driven by headless Chromium through Playwright.

Screenshots of the login, labeling and admin pages are saved under test-output/ at the
repository root. Set ACTIVELABEL_CHROMIUM to use a browser other than /usr/bin/chromium.
"""

from __future__ import annotations

import re
import time
import zipfile
from collections import Counter

import pytest
from browser_support import (
    TIMEOUT_MS,
    chromium,
    needs_chromium,
    run,
    screenshot,
    serving,
)

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium

# Extra annotators for the concurrency and session tests (the demo makes 'annotator').
EXTRA = {"bob": "bob-password-1", "carol": "carol-password-1"}

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A demo project served by `activelabel serve` on a free port. Yields the base URL,
    the project folder and the passwords; the server is always stopped."""
    root = tmp_path_factory.mktemp("browser")
    project = root / "demo"
    built = run("demo", str(project), "--no-serve")
    passwords = dict(re.findall(r"user '(\w+)'\s+password (\S+)", built))
    assert set(passwords) == {"admin", "annotator"}, built
    for name, password in EXTRA.items():
        run("user", "add", str(project), name, "--role", "annotator", "--password", password)
        passwords[name] = password

    with serving(project, root / "server.log") as base:
        yield {"base": base, "project": project, "passwords": passwords}


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def new_context(browser):
    """new_context() -> a fresh browser context (own cookies); all are closed afterwards."""
    made = []

    def make(**options):
        context = browser.new_context(
            viewport={"width": 1280, "height": 800}, accept_downloads=True, **options
        )
        context.set_default_timeout(TIMEOUT_MS)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


def log_in(page, server, name: str, *, shot: str | None = None) -> None:
    """Through the login form, as a person would (the first page asks for it)."""
    page.goto(f"{server['base']}/")
    assert "/login" in page.url
    if shot:
        screenshot(page, shot)
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", server["passwords"][name])
    with page.expect_navigation():
        page.click("form.login button[type=submit]")
    assert "/login" not in page.url, page.inner_text("#flash")


# --- reading the labeling card ---------------------------------------------------------

def card(page) -> dict:
    """What the labeling card shows; `fetches` is how many times the browser downloaded the
    current image (resource timing: a copy from the memory cache is not a download)."""
    return page.evaluate(
        """() => {
            const card = document.querySelector('#card');
            const current = card.querySelector('img.current');
            const prefetch = card.querySelector('img.prefetch');
            return {
                id: card.dataset.imageId ? Number(card.dataset.imageId) : null,
                current: current && current.getAttribute('src'),
                prefetch: prefetch && prefetch.getAttribute('src'),
                fetches: current && performance.getEntriesByName(current.src).length,
                today: Number(card.querySelector('.today').textContent),
                left: Number(card.querySelector('.left').textContent),
            };
        }"""
    )


def wait_until(page, predicate: str, arg=None, what: str = "the page to change") -> None:
    """page.wait_for_function, failing with what the page shows instead of a bare timeout."""
    try:
        page.wait_for_function(predicate, arg=arg)
    except sync_api.TimeoutError:
        state = page.evaluate(
            "() => ({url: location.href, reloaded: window.__marker === undefined,"
            " card: document.querySelector('#card')?.outerHTML.slice(0, 300),"
            " flash: document.querySelector('#flash')?.innerText})"
        )
        pytest.fail(f"timed out waiting for {what}; the page: {state}")


def wait_image_loaded(page, which: str = "current") -> None:
    wait_until(
        page,
        "which => { const i = document.querySelector(`#card img.${which}`);"
        " return Boolean(i && i.complete && i.naturalWidth > 0); }",
        which, f"the {which} image to load",
    )


def class_keys(page) -> dict[str, str]:
    """key -> class name, from the buttons on the card."""
    keys = {}
    for button in page.query_selector_all("form.choices button[data-key]"):
        value = button.get_attribute("value")
        if value.isdigit():
            key = button.get_attribute("data-key")
            assert button.query_selector("kbd").inner_text() == key  # the key is shown
            keys[key] = button.inner_text().removeprefix(key).strip()
    return keys


def press(page, key: str, expect_id: int | None = None) -> tuple[dict, dict]:
    """Press a key on the labeling page and wait for the next card. Checks the page was not
    reloaded (a marker set on window survives) and the image shown is loaded."""
    before = card(page)
    marker = f"m{time.monotonic_ns()}"
    page.evaluate("m => { window.__marker = m; }", marker)
    page.keyboard.press(key)
    changed = (
        "old => Number(document.querySelector('#card').dataset.imageId) !== old"
        if expect_id is None
        else "id => Number(document.querySelector('#card').dataset.imageId) === id"
    )
    wait_until(page, changed, before["id"] if expect_id is None else expect_id,
               f"the next card after pressing {key!r}")
    assert page.evaluate("() => window.__marker") == marker, "the page was reloaded"
    wait_image_loaded(page)
    return before, card(page)


# --- the scenario ------------------------------------------------------------------------

def test_annotator_labels_by_keyboard_and_admin_exports_those_labels(
    server, new_context, tmp_path
):
    page = new_context().new_page()
    log_in(page, server, "annotator", shot="login")
    assert page.url.endswith("/label")

    # One image, large, with its buttons and their keys, all in view without scrolling.
    wait_image_loaded(page)
    assert page.locator("img.current").count() == 1
    box = page.locator("#card img.current").bounding_box()
    assert box["width"] >= 400 and box["height"] >= 400, box
    hidden = page.locator("#card img.prefetch").bounding_box()  # loaded, not shown
    assert hidden["width"] <= 1 and hidden["height"] <= 1, hidden
    keys = class_keys(page)
    assert sorted(keys.values()) == [str(d) for d in range(10)], keys  # the demo's digits
    assert not set(keys) & set("suz"), keys
    for key in "suz":
        assert page.locator(f'#card button[data-key="{key}"] kbd').inner_text() == key
    assert page.locator('#card button[data-key="z"]').is_disabled()  # nothing to undo yet
    height = page.viewport_size["height"]
    for button in page.locator("#card button[data-key]").all():
        where = button.bounding_box()
        assert button.is_visible() and where["y"] + where["height"] <= height, where
    screenshot(page, "labeling")

    given: dict[int, str] = {}  # image id -> class name, as the export should have it
    today = card(page)["today"]
    left = card(page)["left"]
    assert today == 0

    def answer(key: str) -> int:
        nonlocal today, left
        # The next image is already loaded, out of sight (a person looks for longer than
        # this takes) ...
        wait_image_loaded(page, "prefetch")
        before, after = press(page, key)
        # ... and it is the one shown next, without downloading it again.
        assert before["prefetch"] and after["current"] == before["prefetch"]
        assert after["fetches"] == 1, after
        assert after["prefetch"] and after["prefetch"] != after["current"]
        if key in keys:
            given[before["id"]] = keys[key]
        if key != "s":
            today += 1
        left -= 1
        assert (after["today"], after["left"]) == (today, left)
        return before["id"]

    def undo(key: str, undone: int) -> None:
        nonlocal today, left
        before, after = press(page, key, expect_id=undone)
        # The undone image is back on screen; the one that was showing comes next.
        assert after["current"].endswith(f"/images/{undone}")
        assert after["prefetch"] == before["current"]
        assert after["fetches"] == 1, after  # shown before: not downloaded again
        given.pop(undone, None)
        left += 1
        today -= 1  # labels and unsure answers both count
        assert (after["today"], after["left"]) == (today, left)

    key_cycle = list(keys)
    step = 0
    while len(given) < 20:
        key = key_cycle[step % len(key_cycle)]
        step += 1
        image = answer(key)
        if step == 5:  # think better of it: z brings it back, and it is labeled again
            assert card(page)["today"] == 5
            undo("z", image)
            assert card(page)["today"] == 4
            answer(key_cycle[(step + 3) % len(key_cycle)])
        if step == 9:
            answer("s")
        if step == 12:
            unsure = answer("u")
            undo("Backspace", unsure)  # Backspace is undo too
            assert unsure not in given
            answer(key_cycle[0])
        if step == 15:
            answer("u")
    assert len(given) == 20
    assert page.locator('#card button[data-key="z"]').is_enabled()
    assert page.locator("#flash .flash.error").count() == 0

    # The admin, in a browser of their own, sees the count and downloads the export.
    admin = new_context().new_page()
    log_in(admin, server, "admin")
    assert admin.url.endswith("/admin/")
    row = admin.locator("#annotators tbody tr", has_text="annotator")
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "annotator"
    # labels, and today's answers as the card counts them (labels and unsure)
    assert (int(cells[1]), int(cells[2])) == (20, 21), cells
    assert (int(cells[3]), int(cells[4]), int(cells[5])) == (1, 1, 2), cells  # skips, unsure, undos
    assert re.fullmatch(r"\d+(\.\d+)?", cells[6]), cells  # the page sent each answer's time
    labeled = Counter(given.values())
    for class_row in admin.locator("#images tbody tr").all():
        name, count = class_row.locator("td").all_inner_texts()
        assert int(count) == labeled.get(name, 0), (name, count)
    screenshot(admin, "admin")

    assert admin.locator("#export select[name=format]").input_value() == "imagefolder"
    with admin.expect_download() as download_info:
        admin.click("#export button[type=submit]")
    download = download_info.value
    assert download.suggested_filename.endswith(".zip")
    path = tmp_path / download.suggested_filename
    download.save_as(path)

    exported: dict[int, str] = {}
    splits: Counter = Counter()
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith("/") or "/" not in name:
                continue  # labels.csv and the like
            split, label, file_name = name.split("/")
            assert split in ("train", "val", "test"), name
            image_id = int(file_name.split("-", 1)[0])
            assert image_id not in exported, f"image {image_id} exported twice"
            exported[image_id] = label
            splits[split] += 1
    assert exported == given
    assert Counter(exported.values()) == labeled
    assert splits["train"] > 0


def test_two_annotators_never_see_the_same_image(server, new_context):
    pages = []
    for name in ("bob", "carol"):
        page = new_context().new_page()
        log_in(page, server, name)
        wait_image_loaded(page)
        pages.append(page)
    bob, carol = pages

    import sqlite3

    def needs_several(image_url: str | None) -> bool:
        """A QA image asks for votes from several people: both may hold it (the overlap
        rule); any other image is one person's at a time."""
        if not image_url:
            return False
        with sqlite3.connect(server["project"] / "activelabel.db") as db:
            row = db.execute("SELECT votes_needed FROM images WHERE id = ?",
                             [int(image_url.rsplit("/", 1)[1])]).fetchone()
        return row is not None and row[0] > 1

    def check() -> None:
        a, b = card(bob), card(carol)
        assert a["id"] and b["id"]
        # Neither is shown, nor about to be shown, what the other one has on screen.
        if not needs_several(a["current"]):
            assert a["current"] not in (b["current"], b["prefetch"]), (a, b)
        if not needs_several(b["current"]):
            assert b["current"] not in (a["current"], a["prefetch"]), (a, b)

    check()
    for round_ in range(6):
        # Both press at the same time (skip or unsure: this test adds no labels).
        ids = [card(p)["id"] for p in pages]
        bob.keyboard.press("s" if round_ % 2 else "u")
        carol.keyboard.press("u" if round_ % 2 else "s")
        for page, old in zip(pages, ids):
            wait_until(page, "old => Number(document.querySelector('#card').dataset.imageId)"
                       " !== old", old, "the next card")
            wait_image_loaded(page)
        check()


def test_expired_session_sends_the_annotator_to_log_in_again(server, new_context):
    context = new_context()
    page = context.new_page()
    log_in(page, server, "bob")
    wait_image_loaded(page)
    shown = card(page)

    context.clear_cookies()  # the session is gone, as after it expires
    page.keyboard.press("2")
    page.wait_for_url("**/login**", timeout=5000)
    page.wait_for_selector("form.login")
    assert "/login" in page.url
    assert re.search(r"session .*expired", page.inner_text("#flash"))
    screenshot(page, "login-expired")

    # Logging in again leads back to labeling, and the answer was not recorded.
    page.fill("input[name=name]", "bob")
    page.fill("input[name=password]", server["passwords"]["bob"])
    with page.expect_navigation():
        page.click("form.login button[type=submit]")
    assert page.url.endswith("/label"), page.url
    wait_image_loaded(page)
    again = card(page)
    assert again["id"] == shown["id"]
    assert again["today"] == shown["today"]


def test_keys_pressed_fast_act_once_each_without_a_page_load(server, new_context):
    """A key pressed the moment a card arrives (before htmx has wired it up) still answers
    through htmx; a key pressed while an answer is on its way is ignored, so an undo
    cannot take back the answer before the one just given. Skips only: adds no labels."""
    page = new_context().new_page()
    log_in(page, server, "carol")
    wait_image_loaded(page)
    start = card(page)
    page.evaluate("() => { window.__marker = 'kept'; }")

    # 's', and 's' again as soon as the first answer's request has ended.
    page.evaluate(
        """() => new Promise((resolve) => {
            const key = (k) => document.dispatchEvent(
                new KeyboardEvent('keydown', {key: k, bubbles: true, cancelable: true}));
            document.addEventListener('htmx:afterRequest', () => { key('s'); resolve(); },
                                      {once: true});
            key('s');
        })"""
    )
    wait_until(page, "left => Number(document.querySelector('#card .left').textContent) === left",
               start["left"] - 2, "both skips to be recorded")
    assert page.evaluate("() => window.__marker") == "kept", "the page was reloaded"
    twice = card(page)
    assert twice["id"] not in (start["id"], None)

    # 's' then 'z' at once: the skip is sent, the undo ignored (it would act on this card).
    page.evaluate(
        """() => {
            for (const k of ['s', 'z']) document.dispatchEvent(
                new KeyboardEvent('keydown', {key: k, bubbles: true, cancelable: true}));
        }"""
    )
    wait_until(page, "old => Number(document.querySelector('#card').dataset.imageId) !== old",
               twice["id"], "the skip to be recorded")
    page.wait_for_timeout(300)  # room for a wrongly sent undo to come back
    after = card(page)
    assert after["left"] == twice["left"] - 1, (twice, after)
    assert after["id"] != twice["id"]
    assert page.evaluate("() => window.__marker") == "kept"
    assert page.locator("#flash .flash.error").count() == 0


def test_a_cookie_saved_before_logout_is_dead_and_a_password_change_ends_other_sessions(
        server, new_context):
    run("user", "add", str(server["project"]), "dora", "--password", "dora-password-1")
    server["passwords"]["dora"] = "dora-password-1"
    first = new_context()
    page = first.new_page()
    log_in(page, server, "dora")
    saved = first.cookies()
    page.click("form.who button[type=submit]")  # Log out
    page.wait_for_url("**/login**")
    replayed = new_context()
    replayed.add_cookies(saved)
    stale = replayed.new_page()
    stale.goto(f"{server['base']}/label")
    assert "/login" in stale.url  # the copy of the cookie ended with the logout

    here, there = new_context().new_page(), new_context().new_page()
    log_in(here, server, "dora")
    log_in(there, server, "dora")
    here.click("a[href='/account/password']")
    here.fill("input[name=current]", "dora-password-1")
    here.fill("input[name=new]", "lantern-fjord-mosaic")
    here.fill("input[name=again]", "lantern-fjord-mosaic")
    with here.expect_navigation():
        here.click("form.login button[type=submit]")
    assert "1 other session ended" in here.inner_text("#flash")
    there.goto(f"{server['base']}/label")
    assert "/login" in there.url
    here.goto(f"{server['base']}/label")
    assert here.url.endswith("/label")
