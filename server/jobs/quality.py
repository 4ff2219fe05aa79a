"""The quality run: suspected mislabels, near-duplicate groups, the sample-size curve and
class balance, from the store's images and consensus labels through `server.quality`.
Runs as a job (the worker), or in the shell (`activelabel audit`); its life around the
checks is runner.py's. No Flask here."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

from .. import store
from ..config import Project
from ..dataset import csv_writer
from ..learner.setup import make_learner
from ..store import quality as quality_store
from ..store.images import all_images, image_paths
from .runner import QUALITY, Progress, run_job

MIN_LABELS = 20  # fewer consensus labels than this: no mislabel ranking or curve
MAX_GROUPS = 50  # misfiled groups kept, most suspicious first
FINGERPRINT_PROCESSES_FROM = 5000  # images; see fingerprint_workers
STAGES = {"embed": (0.0, 0.35), "mislabels": (0.35, 0.55), "duplicates": (0.55, 0.9),
          "curve": (0.9, 1.0)}


def suspects(db, learner, labeled: list[dict], progress=None) -> dict:
    """Out-of-fold mislabel ranking of the consensus labels."""
    from ..quality.mislabels import find_mislabels

    if len(labeled) < MIN_LABELS or len({r["class_id"] for r in labeled}) < 2:
        return {"skipped": f"needs at least {MIN_LABELS} consensus labels in two classes"}
    features = learner.embeddings([r["id"] for r in labeled])
    issues = find_mislabels(features, np.array([r["class_id"] for r in labeled]),
                            seed=learner.config.seed)
    order = issues.order()
    rows = [
        {"image_id": labeled[i]["id"], "given": int(issues.given[i]),
         "suggested": int(issues.suggested[i]), "score": float(issues.score[i]),
         "rank": int(issues.rank[i]), "flagged": bool(issues.flagged[i])}
        for i in order
    ]
    # Groups of same-looking images filed under one class that look like another: each is
    # one finding on the quality page (its images are in the rows too).
    groups = [{"given": int(g.given), "looks_like": int(g.looks_like), "score": g.score,
               "kind": g.kind, "image_ids": [labeled[i]["id"] for i in g.positions]}
              for g in issues.groups[:MAX_GROUPS]]
    if progress:
        progress(1.0, f"ranked {len(rows)} labels")
    return {"ranking": issues.ranking, "count": len(rows), "flagged": int(issues.flagged.sum()),
            "unscored": issues.unscored, "rows": rows, "groups": groups}


def duplicates(everything: list[dict], learner=None, progress=None) -> dict:
    """Near-duplicate groups over every image, by file content (see quality.duplicates)."""
    from ..quality.duplicates import find_duplicates, fingerprints

    if len(everything) < 2:
        return {"groups": [], "pairs": []}
    prints = fingerprints([r["path"] for r in everything],
                          progress=(lambda f, m="": progress(0.6 * f, m)) if progress else None,
                          workers=fingerprint_workers(len(everything)))
    found = find_duplicates(prints, progress=(lambda f, m="": progress(0.6 + 0.4 * f, m))
                            if progress else None)
    ids = [r["id"] for r in everything]
    return {
        "groups": [[ids[p] for p in group] for group in found.groups],
        "pairs": [{"first": ids[p.first], "second": ids[p.second], "aligned": p.aligned,
                   "phash": p.phash} for p in found.pairs[:2000]],
        "unreadable": [ids[p] for p in prints.failed],
    }


def fingerprint_workers(images: int) -> int:
    """Processes decoding images for the fingerprints: one per core this process may use (at
    most 4) from FINGERPRINT_PROCESSES_FROM images on; below that, starting them (each
    imports numpy, PIL, scipy and imagehash) costs more than they save."""
    if images < FINGERPRINT_PROCESSES_FROM:
        return 1
    from ..learner.head import scoring_threads  # the cores this process may use, at most 4

    return scoring_threads()


def curve(learner, labeled: list[dict], progress=None) -> dict:
    """The sample-size learning curve of the consensus labels."""
    from ..quality.sample_size import estimate_learning_curve

    if len(labeled) < MIN_LABELS or len({r["class_id"] for r in labeled}) < 2:
        return {"skipped": f"needs at least {MIN_LABELS} consensus labels in two classes"}
    fitted = estimate_learning_curve(
        learner.embeddings([r["id"] for r in labeled]),
        np.array([r["class_id"] for r in labeled]), seed=learner.config.seed,
        progress=progress)
    return curve_to_dict(fitted) | {"labels": len(labeled)}


def curve_to_dict(fitted) -> dict:
    return {
        "model": fitted.model,
        "params": [float(v) for v in fitted.params],
        "covariance": np.asarray(fitted.covariance, dtype=float).tolist(),
        "scale": float(fitted.scale),
        "bootstrap": None if fitted.bootstrap_params is None
        else np.asarray(fitted.bootstrap_params, dtype=float).tolist(),
        "points": [{"labels": p.labels, "accuracies": list(map(float, p.accuracies))}
                   for p in fitted.points],
    }


def curve_from_dict(data: dict):
    from ..quality.sample_size import CurvePoint, LearningCurve

    return LearningCurve(
        model=data["model"], params=tuple(data["params"]),
        covariance=np.array(data["covariance"]),
        points=[CurvePoint(p["labels"], p["accuracies"]) for p in data["points"]],
        scale=data["scale"],
        bootstrap_params=None if data["bootstrap"] is None else np.array(data["bootstrap"]),
    )


def balance(db, split=(Fraction(8, 10), Fraction(1, 10), Fraction(1, 10))):
    from ..quality.balance import check_balance

    counts = {c["name"]: c["images"] for c in store.class_counts(db)}
    return check_balance(counts, split)


def run(project: Project, job_id: int, started: bool = False) -> dict:
    return run_quality(project, job_id, started=started)


def run_quality(project: Project, run_id: int, learner=None, started: bool = False) -> dict:
    """Run a queued quality run to the end; on failure the run says why and the previous
    findings stay on the page. `started`: see runner.run_job."""
    return run_job(project, QUALITY, run_id, STAGES,
                   lambda db, progress: _check(db, project, run_id, progress, learner),
                   started)


def _check(db, project: Project, run_id: int, progress: Progress, learner) -> dict:
    from ..store import rounds as round_store

    learner = learner or make_learner(project)
    labeled = round_store.training_set(db)
    everything = all_images(db)
    failed = set(learner.embed([r["id"] for r in everything],
                               [r["path"] for r in everything], progress.stage("embed")))
    labeled = [r for r in labeled if r["id"] not in failed]
    result = {
        "suspects": suspects(db, learner, labeled, progress.stage("mislabels")),
        "duplicates": duplicates(everything, learner, progress.stage("duplicates")),
        "curve": curve(learner, labeled, progress.stage("curve")),
    }
    quality_store.publish_findings(db, run_id, result)
    return result


def suspects_csv(db, result: dict) -> str:
    """The suspects as CSV: rank, image id, path, given and suggested class, score, votes,
    cleanlab's flag."""
    names = {c["id"]: c["name"] for c in store.classes(db)}
    paths = image_paths(db)
    buffer = io.StringIO()
    writer = csv_writer.writer(buffer)
    writer.writerow(["rank", "image_id", "path", "given", "suggested", "score", "flagged"])
    for row in result.get("rows", []):
        writer.writerow([row["rank"] + 1, row["image_id"], paths.get(row["image_id"]),
                         names.get(row["given"]), names.get(row["suggested"]),
                         f"{row['score']:.6f}", int(row["flagged"])])
    return buffer.getvalue()
