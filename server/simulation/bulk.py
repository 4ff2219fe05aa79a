"""`activelabel simulate --mode grid|cluster`: the simulated annotator labels through the
grids of the running product, over HTTP, the way a person's browser would (GET the card,
POST the page), and every key press and click it would need is counted (see
`simulated_annotators` for what counts; images the simulation must leave unlabeled, such as
held-out test images, are toggled at no cost).

cluster: the admin starts a clustering (the silhouette's suggestion, or --clusters) and
    waits for the worker; the annotator labels cluster pages, toggling the images its own
    answers put in another class, or marks a cluster mixed. When no cluster has images
    left, the rest of the budget is labeled one by one.
grid: the first batch is labeled one by one (a round needs labels); after each round the
    annotator accepts verify pages of the class the page offers, toggling the predictions
    its answers disagree with. Without predictions left, it labels one by one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from .annotators import ActionTally, judge_cluster_page, judge_verify_page
from .live_server import Browser, SimulationError, _Processes

MODES = ("single", "grid", "cluster")
CLUSTER_SECONDS = 3600  # a clustering, queued to done, on a slow CPU with a large pool


def start_clustering(admin: Browser, processes: _Processes, clusters: int | None,
                     seconds: float = CLUSTER_SECONDS,
                     log: Callable[[str], None] = print) -> int:
    """Have the admin start a clustering from the bootstrap page and wait for the worker
    to finish it. Returns its id."""
    admin.request("/bootstrap/")
    status = admin.request("/bootstrap/run", {"k": "" if clusters is None else str(clusters)},
                           htmx=True)
    match = re.search(r"Clustering (\d+)", status)
    if not match:
        raise SimulationError(f"starting a clustering did not answer with one: {status[:300]}")
    clustering_id = int(match.group(1))
    deadline = time.monotonic() + seconds
    while "hx-get" in status:
        problem = processes.dead()
        if problem:
            raise SimulationError(f"clustering {clustering_id} cannot finish: {problem}")
        if time.monotonic() > deadline:
            raise SimulationError(f"clustering {clustering_id} did not finish within"
                                  f" {seconds:.0f} s; " + processes.stopped("worker"))
        time.sleep(0.3)
        status = admin.request(f"/bootstrap/status?watching={clustering_id}", htmx=True)
    if f"Clustering {clustering_id}:" not in status:
        error = re.search(r'class="flash error">(.*?)</p>', status, re.S)
        raise SimulationError(f"clustering {clustering_id} failed: "
                              + (" ".join(error.group(1).split()) if error else status[:300]))
    log(" ".join(re.search(rf"Clustering {clustering_id}:[^<]*", status).group(0).split()))
    return clustering_id


def _shown(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'name="shown" value="(\d+)"', page)]


def cluster_batch(browser: Browser, count: int, answers: dict[int, str], unknown: set[int],
                  class_ids: dict[str, int], tally: ActionTally) -> int:
    """Label cluster pages until `count` labels are given (the last page may give more) or
    no cluster is left. `answers`: image id -> this annotator's answer; images in `unknown`
    (held out for testing) are toggled. Returns the labels given."""
    given = 0
    page = browser.request("/bootstrap/", htmx=True)
    while given < count:
        where = re.search(r'data-clustering-id="(\d+)" data-cluster="(\d+)"', page)
        if not where:
            break
        clustering_id, cluster = int(where.group(1)), int(where.group(2))
        shown = _shown(page)
        checked = re.search(r'name="class_id" value="(\d+)"[^>]*checked', page)
        own = [None if i in unknown else answers.get(i) for i in shown]
        verdict = judge_cluster_page(own)
        url = f"/bootstrap/{clustering_id}/{cluster}"
        if verdict is None:
            page = browser.request(url, {"decision": "mixed"}, htmx=True)
            tally.mixed_cluster()
            continue
        name, odd = verdict
        class_id = class_ids[name]
        pick = not (checked and int(checked.group(1)) == class_id)  # already picked?
        page = browser.request(url, {"decision": "label", "class_id": str(class_id),
                                     "shown": shown, "wrong": [shown[i] for i in odd]},
                               htmx=True)
        labeled = _labeled(page)
        tally.page([i for i in odd if own[i] is not None], pick, labeled)
        given += labeled
    return given


def verify_batch(browser: Browser, count: int, answers: dict[int, str], unknown: set[int],
                 class_names: dict[int, str], tally: ActionTally, last: list) -> int:
    """Accept verify pages until `count` labels are given or no prediction is left for the
    annotator. `last[0]` carries the class of the previous page (switching costs a key)."""
    given = 0
    page = browser.request("/verify/", htmx=True)
    while given < count:
        form = re.search(r'data-class-id="(\d+)" data-round-id="(\d+)"', page)
        shown = _shown(page)
        if not form or not shown:
            break
        class_id, round_id = int(form.group(1)), int(form.group(2))
        own = [None if i in unknown else answers.get(i) for i in shown]
        wrong = judge_verify_page(own, class_names[class_id])
        page = browser.request("/verify/", {
            "class_id": str(class_id), "round_id": str(round_id), "order": "confident",
            "shown": shown, "wrong": [shown[i] for i in wrong]}, htmx=True)
        labeled = _labeled(page)
        tally.page([i for i in wrong if own[i] is not None], last[0] != class_id, labeled)
        last[0] = class_id
        given += labeled
        if labeled == 0 and len(wrong) < len(shown):
            break  # nothing could be labeled: do not loop on it
        # The next page of the class the card offers now (the surest one).
        page = browser.request("/verify/", htmx=True)
    return given


def _labeled(page: str) -> int:
    match = re.search(r"Labeled (\d+) as", page)
    if not match:
        raise SimulationError(f"the grid did not say what it labeled: {page[:300]}")
    return int(match.group(1))
