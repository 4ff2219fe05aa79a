"""How long one round takes with cached embeddings, end to end, at growing pool sizes.

For each pool size: a real project database with that many images, 2,000 of them labeled
(10 classes), synthetic 1,280-d float16 embeddings written to the learner's real cache (so
nothing is decoded), then `run_round` exactly as the worker runs it: fit the head, predict
the pool, rank it (with new projects' default strategy unless --strategy says), store
predictions and switch the queue in one transaction, then add the cross-validated accuracy
estimate (after annotators already have the new ranking); then an auto-label run at
--autolabel's target (preview, then the job), timed. What needs no labels (the
neighbour graph, the head's projection) is prepared once beforehand, as a cold-start round
does. Each pool runs rounds side by side, twice each in turns: with label spreading (the
default) and with the head alone.
Prints the seconds from the round's start until the queue switched (the predictions stored
and the switching transaction committed: before December 2026 this figure stopped short of
the publish, about 0.4 s at 100,000 images), the seconds with the estimate, peak memory and
the faster switch time of each with their ratio.

    python bench/round_latency.py [--sizes 20000,100000,1000000] [--strategy margin]
        [--autolabel 0.98]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import store  # noqa: E402
from server.config import Project, ProjectConfig  # noqa: E402
from server.jobs.round import run_round
from server.learner.setup import make_learner  # noqa: E402
from server.store import job_rows

LABELED = 2000
CLASSES = 10
DIM = 1280


def build(root: Path, size: int, strategy: str, seed: int = 0) -> Project:
    project = Project.create(root, ProjectConfig(name=f"pool{size}", strategy=strategy))
    db = store.connect(project.db_path)
    store.add_classes(db, [f"c{i}" for i in range(CLASSES)])
    class_ids = [c["id"] for c in store.classes(db)]
    import_id = store.start_import(db, "synthetic")
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, CLASSES, size)
    for start in range(0, size, 50_000):
        rows = [{"sha256": f"{i:064x}", "path": f"/nonexistent/{i}.png", "rel_path": f"{i}.png",
                 "width": 64, "height": 64, "format": "PNG", "mode": "L", "bytes": 1,
                 "class_id": class_ids[truth[i]] if i < LABELED else None}
                for i in range(start, min(size, start + 50_000))]
        store.add_images(db, import_id, rows, seed=0, votes_needed=1)
    # Synthetic embeddings with class structure, straight into the learner's cache.
    learner = make_learner(project)
    cache = learner.cache()
    centres = rng.normal(size=(CLASSES, DIM)).astype(np.float32)
    for start in range(0, size, 100_000):
        stop = min(size, start + 100_000)
        vectors = centres[truth[start:stop]] + 2.0 * rng.normal(size=(stop - start, DIM))
        cache.put(np.arange(start + 1, stop + 1), vectors.astype(np.float16))
    cache.flush()
    # What needs no labels (the neighbour graph label spreading uses, the head's projection)
    # is computed once for a set of images, as a cold-start round does before the first
    # labels; a round extends the graph with new images only.
    started = time.perf_counter()
    learner.prepare(np.arange(1, size + 1))
    print(f"  label-free preparation of {size:,} images (neighbour graph, projection):"
          f" {time.perf_counter() - started:.0f} s, once", flush=True)
    db.conn.close()
    return project


def autolabel_timing(project: Project, db, target: float) -> None:
    """`activelabel autolabel` after the last round: the preview (thresholds on its held-out
    predictions, the eligible pool read), then the run as a job in this process (labels
    appended, the spot check sent)."""
    from server.autolabel.run import preview
    from server.jobs.autolabel import run as run_autolabel

    started = time.perf_counter()
    made = preview(db, target)
    planned = time.perf_counter() - started
    run_id = job_rows.queue(db, "auto_label_runs", None, target=target, margin=0.02)[0]
    started = time.perf_counter()
    done = run_autolabel(project, run_id)
    ran = time.perf_counter() - started
    print(f"  auto-label at {target:.0%}: preview {planned:.2f} s, run {ran:.2f} s"
          f" ({done['labeled']:,} labeled, {done['spot_checked']} sent to the spot check;"
          f" {made.plan.count:,} planned)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="20000,100000,1000000")
    parser.add_argument("--strategy", default=ProjectConfig(name="-").strategy)
    parser.add_argument("--autolabel", type=float, default=0.98,
                        help="after the rounds, time an auto-label run at this target (0: not)")
    args = parser.parse_args()
    print(f"strategy {args.strategy}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            started = time.perf_counter()
            project = build(Path(tmp) / f"p{size}", size, args.strategy)
            setup = time.perf_counter() - started
            db = store.connect(project.db_path)
            switched = {}
            # Side by side on the same pool: label spreading (the default) and the head
            # alone, so the spreading's cost reads as a ratio on a noisy machine; each twice,
            # in turns (a later round writes into a larger table), the faster of each kept.
            for spreading in (False, True, False, True):
                round_id = job_rows.queue(db, "rounds", None, strategy=args.strategy)[0]
                learner = make_learner(project)
                learner.config.semi_supervised = spreading
                learner.backbone()  # built once, as in a long-running worker
                started = time.perf_counter()
                summary = run_round(project, round_id, learner)
                seconds = time.perf_counter() - started
                pool = job_rows.get(db, "rounds", round_id)["pool_size"]
                ranked = summary["ranked_seconds"]
                switched[spreading] = min(ranked, switched.get(spreading, ranked))
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"pool {size:>9,} {'spreading' if spreading else 'head only':>9}: queue"
                      f" switched after {ranked:5.2f} s, with the estimate {seconds:5.2f} s"
                      f" (ranked {pool:,}, {summary['labels_used']} labels, cv accuracy"
                      f" {summary['accuracy']:.3f}); setup {setup:.0f} s; peak memory so far"
                      f" {peak:,.0f} MB", flush=True)
            if args.autolabel:
                autolabel_timing(project, db, args.autolabel)
            db.conn.close()
            results.append((size, switched[True]))
            print(f"  faster of two: spreading {switched[True]:.2f} s, head only"
                  f" {switched[False]:.2f} s: {switched[True] / switched[False]:.2f}x")
    if len(results) > 1:
        (n0, t0), (n1, t1) = results[0], results[-1]
        print(f"growth: {n1 / n0:.0f}x the pool took {t1 / t0:.1f}x the time to switch the queue")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")
    print("reproduce: python bench/round_latency.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
