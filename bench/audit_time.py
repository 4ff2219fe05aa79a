"""How long the quality run (`activelabel audit`, the quality page's button) takes on a
10,000-label Fashion-MNIST project: 20,000 images (bench/finish.py's base project, its
embeddings cached, built on the first run), the first --labeled of them labeled with their
true class by one annotator. Prints each check's seconds as the job runs them (mislabels,
near-duplicates, the sample-size curve), the fingerprints alone in one process and in one
per core side by side, then the whole job twice.

    python bench/audit_time.py [--labeled 10000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import store  # noqa: E402
from server.config import Project  # noqa: E402
from server.jobs import quality as checks  # noqa: E402
from server.jobs.quality import fingerprint_workers  # noqa: E402
from server.learner.setup import make_learner  # noqa: E402
from server.projects import add_user, open_db  # noqa: E402
from server.quality.duplicates import fingerprints  # noqa: E402
from server.store import job_rows  # noqa: E402
from server.store import rounds as round_store  # noqa: E402
from server.store.images import all_images  # noqa: E402


def labeled_copy(base: Project, truth: dict[str, str], target: Path, labeled: int) -> Project:
    shutil.copytree(base.root, target)
    project = Project.open(target)
    add_user(project, "ann", "annotator", "ann-password-1")
    db = open_db(project)
    ids = {c["name"]: c["id"] for c in store.classes(db)}
    user = store.get_user_by_name(db, "ann")["id"]
    for row in list(db.query("SELECT id, rel_path FROM images ORDER BY id"))[:labeled]:
        store.add_vote(db, user, row["id"], "label", ids[truth[Path(row["rel_path"]).name]])
    db.conn.close()
    return project


def main() -> None:
    import finish

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labeled", type=int, default=10_000)
    args = parser.parse_args()
    base, truth = finish.base_project("fashion", 20_000, None)
    with tempfile.TemporaryDirectory(prefix="audit-") as scratch:
        project = labeled_copy(base, truth, Path(scratch) / "project", args.labeled)
        db = open_db(project)
        learner = make_learner(project)
        labeled = round_store.training_set(db)
        everything = all_images(db)
        print(f"{len(labeled):,} labels, {len(everything):,} images")
        stages = (("mislabels", lambda: checks.suspects(db, learner, labeled)),
                  ("near-duplicates", lambda: checks.duplicates(everything, learner)),
                  ("sample-size curve", lambda: checks.curve(learner, labeled)))
        for name, work in stages:
            started = time.perf_counter()
            work()
            print(f"  {name}: {time.perf_counter() - started:.1f} s")
        paths = [r["path"] for r in everything]
        workers = fingerprint_workers(len(paths))
        for count in (1, workers, 1, workers):
            started = time.perf_counter()
            fingerprints(paths, workers=count)
            print(f"  fingerprints in {count} process(es): {time.perf_counter() - started:.1f} s")
        for _ in range(2):
            run_id, _ = job_rows.queue(db, "quality_runs", None)
            started = time.perf_counter()
            checks.run_quality(project, run_id)
            print(f"whole quality run: {time.perf_counter() - started:.1f} s")
        db.conn.close()
    print("reproduce: python bench/audit_time.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
