"""The cluster bootstrap's job: embed the images that still need votes (with the learner and
its cache, as a round does), cluster them (`learner.clusters`), store every image's cluster
and position, and render the thumbnails of each cluster's first page so the grids open
fast. No Flask here: the worker (huey), the CLI and the benches call `run_clustering`."""

from __future__ import annotations

import time

import numpy as np

from .. import store
from ..config import Project
from ..dataset.imaging import ImageRejected, cached_copy
from ..learner import Learner, LearnerError, clusters
from ..learner.setup import make_learner
from ..store import clusterings, job_rows
from ..store import rounds as round_store
from .runner import CLUSTERING, Progress, run_job

PAGE = 48  # thumbnails in one grid
STAGES = {"embed": (0.0, 0.7), "cluster": (0.7, 0.95), "thumbs": (0.95, 1.0)}


def run(project: Project, job_id: int, started: bool = False) -> dict:
    return run_clustering(project, job_id, started=started)


def run_clustering(project: Project, clustering_id: int, learner: Learner | None = None,
                   thumbnails: bool = True, started: bool = False) -> dict:
    """Run a queued clustering. On failure it is marked failed with the reason (the previous
    clustering keeps serving) and the error is re-raised for the caller's log. `started`:
    see runner.run_job."""
    return run_job(project, CLUSTERING, clustering_id, STAGES,
                   lambda db, progress: _cluster(db, project, clustering_id, progress, learner,
                                                 thumbnails), started)


def _cluster(db, project: Project, clustering_id: int, progress: Progress,
             learner: Learner | None, thumbnails: bool) -> dict:
    started = time.monotonic()
    row = job_rows.get(db, CLUSTERING.table, clustering_id)
    pool = round_store.pool(db)
    if len(pool) < 2:
        raise LearnerError("fewer than two images need votes: nothing to cluster")
    learner = learner or make_learner(project)
    failed = set(learner.embed([r["id"] for r in pool], [r["path"] for r in pool],
                               progress.stage("embed")))
    pool = [r for r in pool if r["id"] not in failed]
    if len(pool) < 2:
        raise LearnerError("fewer than two readable images need votes: nothing to cluster")
    ids = np.array([r["id"] for r in pool], dtype=np.int64)
    classes = len(store.classes(db))
    report = progress.stage("cluster")
    report(0.0, f"preparing {len(ids)} embeddings")
    points = clusters.prepare(learner.embeddings(ids, np.float16), project.config.seed)
    method = "Ward" if len(ids) <= clusters.WARD_LIMIT else "MiniBatchKMeans"
    report(0.3, f"clustering {len(ids)} images ({method})")
    found = clusters.cluster(points, row["k"], classes, project.config.seed)
    summary = {
        "clusters": found.k, "suggested_k": found.suggested_k,
        "silhouettes": {str(k): round(v, 4) for k, v in found.silhouettes.items()},
        "method": found.method, "seconds": round(time.monotonic() - started, 2),
    }
    if failed:
        summary["message"] = f"done; {len(failed)} images could not be read and were left out"
    if thumbnails:
        _render_first_pages(project, pool, found, progress.stage("thumbs"))
    summary["seconds"] = round(time.monotonic() - started, 2)
    clusterings.publish_clustering(db, clustering_id, ids, found.labels, found.positions,
                                   found.distances, summary)
    return summary


def _render_first_pages(project: Project, pool: list[dict], found: clusters.Clusters,
                        report) -> None:
    """Thumbnails of each cluster's first page, so the grid a person opens first is served
    from the disk cache. Unreadable files are left for the page to report."""
    first = np.flatnonzero(found.positions < PAGE)
    config = project.config
    for done, row in enumerate(first):
        image = pool[int(row)]
        try:
            cached_copy(project.cache_dir, "thumb", image["id"], image["path"],
                        config.thumb_size, config.max_pixels)
        except ImageRejected:
            pass
        if done % 50 == 0:
            report(done / len(first), f"thumbnails {done}/{len(first)}")
