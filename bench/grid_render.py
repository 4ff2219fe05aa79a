"""How fast a 48-thumbnail grid is served on the demo: the server's time for a cluster page
and a verify page (the htmx fragment a key press fetches, and the full page), and for their
48 thumbnails, first rendered into the disk cache, then served from it.

The demo project (scikit-learn's 1,797 digits, as `activelabel demo` builds it) is built in
bench/out/grid-demo the first time, clustered, bootstrapped with the true labels of a few
cluster pages and given one round, all through the product's own functions; the pages are
then requested through the real app (Flask's test client: the server's time, no network).

    python bench/grid_render.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import store  # noqa: E402
from server.app import create_app  # noqa: E402
from server.config import Project  # noqa: E402
from server.dataset.demo import write_digits  # noqa: E402
from server.dataset.imaging import copy_path  # noqa: E402
from server.jobs.clustering import run_clustering  # noqa: E402
from server.jobs.round import run_round  # noqa: E402
from server.projects import add_user, init_project  # noqa: E402
from server.store import cluster_pages, clusterings, job_rows  # noqa: E402
from server.store import rounds as round_store  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "grid-demo"
PASSWORD = "grid-bench-password"


def build() -> Project:
    """The demo project with a clustering, 10 cluster pages labeled true, and a round."""
    if (OUT / "project" / "activelabel.toml").exists():
        project = Project.open(OUT / "project")
        db = store.connect(project.db_path)
        ready = round_store.serving_round(db) is not None
        db.conn.close()
        if ready:
            return project
        shutil.rmtree(OUT)
    write_digits(OUT / "images", OUT / "oracle.csv")
    project, _ = init_project(OUT / "project", OUT / "images", [str(d) for d in range(10)])
    add_user(project, "bench", "annotator", PASSWORD)
    with (OUT / "oracle.csv").open(newline="") as handle:
        truth_by_file = {row["file"]: row["label"] for row in csv.DictReader(handle)}
    db = store.connect(project.db_path)
    try:
        truth = {r["id"]: truth_by_file[r["rel_path"]]
                 for r in db.query("SELECT id, rel_path FROM images")}
        classes = {c["name"]: c["id"] for c in store.classes(db)}
        user = store.get_user_by_name(db, "bench")["id"]
        clustering_id, _ = job_rows.queue(db, "clusterings", None, k=None)
        print("clustering the demo (embeds 1,797 images once)...", flush=True)
        run_clustering(project, clustering_id)
        for _ in range(10):
            cluster = cluster_pages.next_cluster(db, clustering_id, user)
            ids = [m["image_id"] for m in
                   cluster_pages.cluster_page(db, clustering_id, cluster, user)["members"]]
            labels = [truth[i] for i in ids]
            top = max(set(labels), key=labels.count)
            cluster_pages.confirm_cluster(db, user, clustering_id, cluster, classes[top], ids,
                                          [i for i in ids if truth[i] != top])
        store.release_leases(db, user)
        round_id = job_rows.queue(db, "rounds", None, strategy="margin")[0]
    finally:
        db.conn.close()
    print("one round...", flush=True)
    run_round(project, round_id)
    return project


def login(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    client.post("/login", data={"name": "bench", "password": PASSWORD, "csrf_token": token})
    return token


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def measure(client, token: str, project: Project, path: str, repeat: int) -> list[str]:
    fragment, full, thumbs_cold, thumbs_warm, count = [], [], None, [], 0
    for attempt in range(repeat):
        ms, response = timed(lambda: client.get(path, headers={"HX-Request": "true"}))
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        fragment.append(ms)
        ids = [int(i) for i in re.findall(r'name="shown" value="(\d+)"',
                                          response.get_data(as_text=True))]
        count = len(ids)
        if attempt == 0:
            for image_id in ids:  # cold: no copy on disk yet
                copy_path(project.cache_dir, "thumb", image_id).unlink(missing_ok=True)
            ms, _ = timed(lambda: [client.get(f"/images/{i}?size=thumb").close() for i in ids])
            thumbs_cold = ms
        ms, _ = timed(lambda: [client.get(f"/images/{i}?size=thumb").close() for i in ids])
        thumbs_warm.append(ms)
        ms, response = timed(lambda: client.get(path))
        full.append(ms)

    accept = []
    if path.startswith("/verify/"):
        # Enter on the page: 48 votes in one transaction and the next page; then undone.
        for _ in range(max(3, repeat // 4)):
            page = client.get(path, headers={"HX-Request": "true"}).get_data(as_text=True)
            form = re.search(r'data-class-id="(\d+)" data-round-id="(\d+)"', page)
            shown = re.findall(r'name="shown" value="(\d+)"', page)
            ms, response = timed(lambda: client.post(path, data={
                "class_id": form.group(1), "round_id": form.group(2), "shown": shown,
                "csrf_token": token}, headers={"HX-Request": "true", "X-CSRFToken": token}))
            assert f"Labeled {len(shown)} as" in response.get_data(as_text=True)
            accept.append(ms)
            client.post("/verify/undo", data={"csrf_token": token},
                        headers={"HX-Request": "true", "X-CSRFToken": token})

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):6.1f} ms"

    return [
        f"{path}: {count} thumbnails",
        f"  grid fragment (htmx):                      {median(fragment)}",
        f"  full page:                                 {median(full)}",
        f"  {count} thumbnails, rendered into the cache:  {thumbs_cold:6.1f} ms (once)",
        f"  {count} thumbnails, from the disk cache:      {median(thumbs_warm)}",
        f"  fragment + thumbnails from the cache:      "
        f"{statistics.median(fragment) + statistics.median(thumbs_warm):6.1f} ms",
    ] + ([f"  Enter: {count} votes written and the next page: {median(accept)}"] if accept else [])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    project = build()
    app = create_app(project.root, {"TESTING": True})
    client = app.test_client()
    token = login(client)
    db = store.connect(project.db_path)
    clustering = clusterings.current_clustering(db)
    db.conn.close()
    lines = [f"demo: 1,797 digits, clustering {clustering['id']} ({clustering['clusters']}"
             f" clusters), server time, median of {args.repeat}"]
    lines += measure(client, token, project, "/verify/", args.repeat)
    lines += measure(client, token, project, "/bootstrap/", args.repeat)
    lines.append("reproduce: python bench/grid_render.py " + " ".join(sys.argv[1:]))
    text = "\n".join(lines)
    print(text)
    (OUT.parent / "grid_render.txt").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
