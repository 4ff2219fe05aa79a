"""Many labels per keystroke in a real browser: a fresh demo-like project with no labels is
bootstrapped by labeling clusters with the keyboard, a round runs (the admin's 'Retrain
now'), and grid verify accepts a page of predictions with one Enter.

A real server (`activelabel serve`, waitress, with its round worker) in a subprocess, driven
by headless Chromium through Playwright, as in test_browser.py. Screenshots of the cluster
grid and the verify grid are saved under test-output/ at the repository root, with the grid
timings measured in the browser (grid-timing.txt).
"""

from __future__ import annotations

import csv
import re
import time

import pytest
from browser_support import (
    OUTPUT,
    TIMEOUT_MS,
    chromium,
    needs_chromium,
    run,
    screenshot,
    serving,
)

from server import store
from server.dataset.demo import write_digits

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium

JOB_MS = 240_000  # a clustering or a round on a busy two-core CPU
IMAGES = 1797  # the whole demo
USERS = {"boss": ("admin", "boss-password-1"), "ann": ("annotator", "ann-password-12")}

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A demo-like project (the demo's digits, fewer of them, no labels) served with its
    worker. Yields the base URL, the project folder and the true digit of each file."""
    root = tmp_path_factory.mktemp("bulk-browser")
    images, oracle = root / "digits", root / "oracle.csv"
    write_digits(images, oracle, limit=IMAGES)
    project = root / "demo"
    run("init", str(project), "--images", str(images), "--classes", ",".join(map(str, range(10))))
    for name, (role, password) in USERS.items():
        run("user", "add", str(project), name, "--role", role, "--password", password)
    with oracle.open(newline="") as handle:
        truth = {row["file"]: row["label"] for row in csv.DictReader(handle)}
    log_path = root / "server.log"
    with serving(project, log_path) as base:
        yield {"base": base, "project": project, "truth": truth, "log": log_path}


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def _page(browser, server, name: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{server['base']}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", USERS[name][1])
    with page.expect_navigation():
        page.click("form.login button[type=submit]")
    assert "/login" not in page.url, page.inner_text("#flash")
    return page


class Data:
    """The project's database, read by the test to know the truth and check the votes."""

    def __init__(self, server):
        self.db = store.connect(server["project"] / "activelabel.db", migrate=False)
        self.truth = {r["id"]: server["truth"][r["rel_path"]]
                      for r in self.db.query("SELECT id, rel_path FROM images")}

    def votes(self, source: str) -> list[dict]:
        return list(self.db.query(
            "SELECT a.image_id, c.name AS label FROM annotations a JOIN classes c"
            " ON c.id = a.class_id WHERE a.kind = 'label' AND a.source = ? AND NOT EXISTS"
            " (SELECT 1 FROM annotations r WHERE r.retracts_id = a.id)", [source]))

    def latest_predictions(self) -> list[dict]:
        """The latest round's predictions, by rank."""
        return list(self.db.query(
            "SELECT image_id, confidence, rank FROM predictions WHERE round_id ="
            " (SELECT max(id) FROM rounds WHERE status = 'done') ORDER BY rank"))

    def leased(self, name: str) -> set[int]:
        return {r[0] for r in self.db.execute(
            "SELECT image_id FROM leases JOIN users u ON u.id = user_id WHERE u.name = ?",
            [name])}

    def queued(self) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT image_id FROM queue")}


def current_card(page) -> int:
    """The image id on the labeling card."""
    src = page.get_attribute(".card img.current", "src")
    return int(re.search(r"/images/(\d+)", src).group(1))


def grid(page) -> list[int]:
    return [int(v) for v in page.eval_on_selector_all(
        "#grid-card .thumbs input[type=checkbox]", "boxes => boxes.map(b => b.value)")]


def focused(page) -> int | None:
    value = page.evaluate("() => document.activeElement && document.activeElement.value")
    return int(value) if value else None


def wait_for_new_grid(page, before: list[int], what: str) -> None:
    try:
        page.wait_for_function(
            "old => { const ids = Array.from(document.querySelectorAll("
            "'#grid-card .thumbs input[type=checkbox]')).map(b => b.value).join(',');"
            " return ids !== old; }", arg=",".join(map(str, before)))
    except sync_api.TimeoutError:
        pytest.fail(f"timed out waiting for {what}; flash: {page.inner_text('#flash')}")


def thumbnails_loaded(page) -> None:
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#grid-card .thumb img'))"
        ".every(i => i.complete && i.naturalWidth > 0)")


def label_cluster_page(page, data: Data) -> tuple[str, list[int], list[int]]:
    """Pick the page's most common true class with its key, toggle the others with the
    arrow keys and space, press Enter. Returns (class, shown, toggled)."""
    shown = grid(page)
    labels = [data.truth[i] for i in shown]
    top = max(sorted(set(labels)), key=labels.count)
    odd = [n for n, i in enumerate(shown) if data.truth[i] != top]
    assert focused(page) == shown[0]  # the grid has the focus, on its first image
    page.keyboard.press(top)  # the digit's key picks the class
    assert page.is_checked(f"#grid-card input[name=class_id][data-key='{top}']")
    at = 0
    for index in odd:
        for _ in range(index - at):
            page.keyboard.press("ArrowRight")
        at = index
        assert focused(page) == shown[index]
        page.keyboard.press(" ")
        assert page.is_checked(f"#grid-card input[name=wrong][value='{shown[index]}']")
    return top, shown, [shown[n] for n in odd]


def test_bootstrap_by_clusters_then_a_round_then_one_enter_verifies_a_page(browser, server):
    data = Data(server)
    admin = _page(browser, server, "boss")
    admin.goto(f"{server['base']}/bootstrap/")
    assert "No clustering yet" in admin.inner_text("#grid-card")
    admin.click("#clustering-status button[type=submit]")
    # The status polls until the worker is done, then the page reloads with the clusters.
    admin.wait_for_selector("#grid-card .thumbs", timeout=JOB_MS)
    status = admin.inner_text("#clustering-status")
    assert f"clusters of {IMAGES} images (ward)" in status, status
    screenshot(admin, "bulk-bootstrap-admin")

    ann = _page(browser, server, "ann")
    ann.goto(f"{server['base']}/bootstrap/")
    ann.wait_for_selector("#grid-card .thumbs")
    thumbnails_loaded(ann)
    labeled: dict[int, str] = {}
    aside: set[int] = set()
    pages, shot = 0, False
    # Cluster pages until every digit has labels: the first page of each cluster comes
    # before any second page, so the bootstrap covers the look-alike groups quickly.
    while len(set(labeled.values())) < 10:
        top, shown, odd = label_cluster_page(ann, data)
        if odd and not shot:
            screenshot(ann, "bulk-cluster-grid")  # the class picked, the odd ones crossed out
            shot = True
        ann.keyboard.press("Enter")
        wait_for_new_grid(ann, shown, "the next cluster page")
        assert f"Labeled {len(shown) - len(odd)} as “{top}”" in ann.inner_text(".outcome")
        labeled.update({i: top for i in shown if i not in odd})
        aside.update(odd)
        pages += 1
        assert pages <= 40, f"{pages} cluster pages and still classes without labels"
    # s: this cluster is mixed, left alone; the next one comes.
    shown = grid(ann)
    ann.keyboard.press("s")
    wait_for_new_grid(ann, shown, "the cluster after a mixed one")
    assert "is left alone (mixed)" in ann.inner_text(".outcome")
    assert set(shown) <= data.queued()
    votes = data.votes("cluster")
    assert {v["image_id"]: v["label"] for v in votes} == labeled
    assert aside <= data.queued() and not set(labeled) & data.queued()
    right = sum(data.truth[i] == label for i, label in labeled.items())
    assert right == len(labeled)  # the odd ones out were toggled: every vote is true

    # A round, from the admin page's button.
    admin.goto(f"{server['base']}/admin/")
    admin.click("#round-status button[type=submit]")
    admin.wait_for_function(
        "() => /Round \\d+ finished/.test(document.querySelector('#round-status').innerText)",
        timeout=JOB_MS)

    # The next image on the labeling card is one the model is unsure of, and the card says
    # so: the round's first-ranked image (of those the annotator does not hold: the cluster
    # page left on screen is leased to them), its confidence among the lowest fifth of the
    # pool's. The admin labels here, after logging out, which gives back the cluster page the
    # admin was shown (a person's leased images come first on their card).
    with admin.expect_navigation():
        admin.click("form.who button[type=submit]")
    admin = _page(browser, server, "boss")
    admin.goto(f"{server['base']}/label")
    card = current_card(admin)
    suggestion = admin.inner_text(".card .suggestion")
    match = re.fullmatch(r"Model suggests (\d) \((\d+)% sure\)", suggestion.strip())
    assert match, suggestion
    held = data.leased("ann")
    ranked = data.latest_predictions()
    first = next(p for p in ranked if p["image_id"] not in held)  # the first not held by ann
    assert card == first["image_id"], (card, first, ranked[:5])
    assert int(match.group(2)) == round(first["confidence"] * 100)
    confidences = sorted(p["confidence"] for p in ranked)
    assert first["confidence"] <= confidences[len(confidences) // 5], (
        suggestion, confidences[len(confidences) // 5])
    screenshot(admin, "label-after-round")

    started = time.perf_counter()
    ann.goto(f"{server['base']}/verify/")
    ann.wait_for_selector("#grid-card .thumbs")
    thumbnails_loaded(ann)
    first_load = time.perf_counter() - started
    shown = grid(ann)
    assert 0 < len(shown) <= 48
    chosen = ann.inner_text("#grid-card .class-tabs a.chosen kbd")
    assert focused(ann) == shown[0]
    screenshot(ann, "bulk-verify-grid")
    # While the page is looked at, the browser fetches the next page's thumbnails.
    ann.wait_for_function(
        "() => Array.from(document.querySelectorAll('link[rel=prefetch]')).every(l =>"
        " performance.getEntriesByName(l.href).some(e => e.responseEnd > 0))")
    prefetched = ann.eval_on_selector_all("link[rel=prefetch]", "links => links.length")
    before = len(data.votes("grid"))
    started = time.perf_counter()
    ann.keyboard.press("Enter")  # one key: the whole page is accepted
    wait_for_new_grid(ann, shown, "the next verify page")
    swapped = time.perf_counter() - started
    thumbnails_loaded(ann)
    next_page = time.perf_counter() - started
    screenshot(ann, "bulk-verify-after-enter")
    votes = data.votes("grid")
    assert len(votes) - before == len(shown)
    assert {v["label"] for v in votes} == {chosen}
    assert f"Labeled {len(shown)} as “{chosen}”" in ann.inner_text(".outcome")
    precision = sum(data.truth[v["image_id"]] == chosen for v in votes) / len(votes)
    # z takes the page back; u shows the class most uncertain first.
    after = grid(ann)
    ann.keyboard.press("z")
    wait_for_new_grid(ann, after, "the undone page")
    assert f"Undid {len(shown)} labels." in ann.inner_text(".outcome")
    assert len(data.votes("grid")) == before and grid(ann) == shown
    ann.keyboard.press("u")
    ann.wait_for_function("() => /most uncertain first/.test("
                          "document.querySelector('#grid-card .counts').innerText)")
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "grid-timing.txt").write_text(
        f"bootstrap: {len(labeled)} labels from {pages} cluster pages, {len(aside)} odd ones"
        f" out toggled\nverify grid of {len(shown)} thumbnails, in the browser (page load to"
        f" every thumbnail shown): {first_load * 1000:.0f} ms\n"
        f"Enter to the next page of {len(grid(ann))} thumbnails shown ({prefetched}"
        f" prefetched): {next_page * 1000:.0f} ms (the grid swapped in after"
        f" {swapped * 1000:.0f} ms: 48 votes written and the next page rendered)\n"
        f"the accepted page's predictions were right for {precision:.0%}\n",
        encoding="utf-8")
    # Most confident first, after a bootstrap over every class, the page is mostly right.
    assert precision >= 0.8, precision
    data.db.conn.close()
