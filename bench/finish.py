"""How many human labels finish a dataset when the model labels what it is sure of.

The product's own loop, in this process, on a real project (SQLite, the default backbone
on the CPU, the learner's cache): a cold-start round orders the queue; a simulated
annotator who is always right labels the queue's first --batch images (store.next_images
and add_handed_vote, as the labeling screen does); a round trains and ranks (run_round, as
the worker runs it); the model auto-labels at --target (a preview, then an auto-label
job run in this process, as `activelabel autolabel` does), when the run would label at
least --min-run images and --min-share of those left (the admin's policy: a run small
enough to check by hand is not worth its spot check); again, until the queue is empty or
--budget human labels are spent.
Each run's spot check goes to the front of the queue, so the annotator answers it in the
next batches: those answers are human labels, counted in the budget.

Prints, per seed: the human labels (and their share of the pool), the auto-labels, how
many images are left, the share of all the pool's images labeled right (an image left
unlabeled counts as not right), and for each auto-label run its realised precision
(against the truth, which the loop never shows the model) beside its calibration estimate
(the mean calibrated confidence of what it labeled), its held-out estimate and what its
spot check measured (with the 90 % interval); then how often those intervals covered the
realised precision, and how far the calibration estimate was from it.

    python bench/finish.py [--data digits|fashion] [--pool 20000] [--seeds 3]
        [--batch 100] [--target 0.98] [--budget 0.5] [--margin 0.02] [--train-on-auto-labels]
        [--finish 0.97] [--margin-of labels|dataset]

With --finish the admin tries, before each run, to finish the dataset at that share of all
its labels right (`activelabel autolabel --finish`), and labels what the model is sure of
at --target only when it cannot yet.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import store  # noqa: E402
from server.autolabel.run import AutoLabelError, preview, report  # noqa: E402
from server.config import CONFIG_NAME, Project  # noqa: E402
from server.jobs.autolabel import run as run_autolabel  # noqa: E402
from server.jobs.round import run_round  # noqa: E402
from server.projects import add_user, init_project  # noqa: E402
from server.simulation.simulate import copy_project  # noqa: E402
from server.store import job_rows  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def write_images(data: str, pool: int, folder: Path) -> dict[str, str]:
    """The pool's PNGs (once); returns file name -> true class."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    if data == "digits":
        from sklearn.datasets import load_digits

        from server.dataset.demo import digit_image

        digits = load_digits()
        for index in range(min(pool, len(digits.target))):
            name = f"digit-{index:04d}.png"
            if not (folder / name).exists():
                digit_image(digits.images[index]).save(folder / name)
            truth[name] = str(int(digits.target[index]))
        return truth
    from _fashion import NAMES, load, write_pngs

    images, labels = load("train")
    paths = write_pngs(images[:pool], folder, "train")
    return {Path(p).name: NAMES[int(c)] for p, c in zip(paths, labels[:pool], strict=True)}


def base_project(data: str, pool: int, work: Path) -> tuple[Project, dict[str, str]]:
    """A project over the pool with no labels, its embeddings computed once (a cold start
    round), kept under bench/out for the next run."""
    images = OUT / f"finish-{data}-{pool}" / "images"
    truth = write_images(data, pool, images)
    root = OUT / f"finish-{data}-{pool}" / "project"
    classes = sorted(set(truth.values()), key=lambda c: (len(c), c))
    if not (root / CONFIG_NAME).exists():
        shutil.rmtree(root, ignore_errors=True)
        project, _ = init_project(root, images, classes, seed=0, qa_fraction=0.0)
        db = store.connect(project.db_path)
        round_id = job_rows.queue(db, "rounds", None, strategy=project.config.strategy)[0]
        db.conn.close()
        started = time.perf_counter()
        run_round(project, round_id)
        print(f"embedded {len(truth)} images in {time.perf_counter() - started:.0f} s")
    return Project.open(root), truth


def final_labels(db) -> dict[int, int]:
    """Image id -> class of every image labeled, by people or by the model."""
    return dict(db.execute("SELECT image_id, class_id FROM image_state"
                           " WHERE status IN ('agreed', 'adjudicated', 'auto')").fetchall())


def one_seed(base: Project, truth: dict[str, str], seed: int, work: Path, args) -> dict:
    project, _ids = copy_project(base, work / f"seed{seed}")
    config = dataclasses.replace(project.config, seed=seed,
                                 train_on_auto_labels=args.train_on_auto_labels)
    (project.root / CONFIG_NAME).write_text(config.to_toml(), encoding="utf-8")
    project = Project.open(project.root)
    add_user(project, "sim", "annotator", "sim-password-1")
    db = store.connect(project.db_path)
    names = {c["id"]: c["name"] for c in store.classes(db)}
    ids_of = {c["name"]: c["id"] for c in store.classes(db)}
    true_class = {r["id"]: ids_of[truth[Path(r["rel_path"]).name]]
                  for r in db.query("SELECT id, rel_path FROM images")}
    user = store.get_user_by_name(db, "sim")["id"]
    pool = len(true_class)
    budget = int(args.budget * pool)
    runs, humans, started = [], 0, time.perf_counter()

    def round_now() -> None:
        round_id = job_rows.queue(db, "rounds", None, strategy=project.config.strategy)[0]
        run_round(project, round_id)

    round_now()  # the cold start: a typical image of each cluster first
    while humans < budget:
        handed = store.next_images(db, user, n=min(args.batch, budget - humans))
        if not handed:
            break
        for image_id in handed:
            store.add_handed_vote(db, user, image_id, "label", true_class[image_id])
        humans += len(handed)
        round_now()
        finishing = False
        if args.finish:
            try:  # the admin tries to finish first, then labels what the model is sure of
                made = preview(db, args.finish, finish=True)
                finishing = made.plan.count > 0
            except AutoLabelError:
                pass
        try:
            made = made if finishing else preview(db, args.target)
        except AutoLabelError as exc:
            print(f"  seed {seed}, {humans} labels: no auto-labels: {exc}")
            continue
        left = len(true_class) - len(final_labels(db))
        if not finishing and made.plan.count < max(args.min_run, args.min_share * left):
            continue  # the admin waits for a run worth its spot check
        run_id = job_rows.queue(db, "auto_label_runs", None,
                                target=args.finish if finishing else args.target,
                                finish=int(finishing),
                                margin_of_dataset=int(args.margin_of == "dataset"),
                                margin=None if args.no_spot_check else args.margin)[0]
        done = run_autolabel(project, run_id)  # as `activelabel autolabel` runs it
        chosen = list(db.execute(
            "SELECT a.image_id, a.class_id FROM annotations a JOIN auto_answers x"
            " ON x.annotation_id = a.id WHERE x.run_id = ?", [run_id]))
        right = sum(true_class[i] == c for i, c in chosen)
        held = [c for c in made.plan.classes if c.threshold is not None]
        held_right = sum(c.held_out_precision * c.held_out_count for c in held)
        runs.append({"humans": humans, "labeled": done["labeled"], "right": right,
                     "finish": finishing,
                     "run_id": run_id, "spot": done["spot_checked"],
                     "expected": made.plan.expected,
                     "held_out": held_right / max(sum(c.held_out_count for c in held), 1)})
    # What the spot checks measured of all the auto-labels, once the loop has answered them,
    # against the truth of those labels.
    found = report(db)
    overall = found["measured"][-1] if found else None
    standing = list(db.execute(
        "SELECT a.image_id, a.class_id FROM annotations a WHERE a.kind = 'auto' AND NOT EXISTS"
        " (SELECT 1 FROM annotations r WHERE r.retracts_id = a.id)"))
    realised = (sum(true_class[i] == c for i, c in standing) / len(standing)
                if standing else None)
    final = final_labels(db)
    ready = db.execute("SELECT labels_used, pool_size, auto_ready FROM rounds WHERE status ="
                       " 'done' AND auto_ready IS NOT NULL ORDER BY id").fetchall()
    auto = sum(r["labeled"] for r in runs)
    right = sum(true_class[i] == c for i, c in final.items())
    db.conn.close()
    return {"seed": seed, "pool": pool, "humans": humans, "auto": auto, "overall": overall,
            "dataset": found["dataset"] if found else None,
            "realised": realised, "spot": sum(r["spot"] for r in runs), "ready": ready,
            "left": pool - len(final), "right_share": right / pool,
            "auto_right": sum(r["right"] for r in runs), "runs": runs,
            "seconds": time.perf_counter() - started, "names": names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("digits", "fashion"), default="digits")
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--budget", type=float, default=0.5,
                        help="the most human labels, as a share of the pool")
    parser.add_argument("--margin", type=float, default=0.02,
                        help="the spot checks' margin (90 %% interval half-width)")
    parser.add_argument("--no-spot-check", action="store_true")
    parser.add_argument("--margin-of", choices=("labels", "dataset"), default="labels",
                        help="what --margin is of (`activelabel autolabel --margin-of`)")
    parser.add_argument("--finish", type=float, default=None,
                        help="before each run, try to finish the dataset at this share of"
                             " all its labels right (`activelabel autolabel --finish`)")
    parser.add_argument("--train-on-auto-labels", action="store_true",
                        help="rounds train on the auto-labels too (model.train_on_auto_labels)")
    parser.add_argument("--min-run", type=int, default=100,
                        help="auto-label only when a run would label at least this many ...")
    parser.add_argument("--min-share", type=float, default=0.05,
                        help="... and this share of the images left")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="finish-") as scratch:
        work = Path(scratch)
        base, truth = base_project(args.data, args.pool, work)
        print(f"{args.data}: pool {len(truth)}, batch {args.batch}, target {args.target:.0%}")
        print("seed  human  share   auto  left  all right  auto precision  expected  held-out"
              "  seconds")
        results = []
        for seed in range(args.seeds):
            r = one_seed(base, truth, seed, work, args)
            results.append(r)
            expected = np.average([x["expected"] for x in r["runs"]],
                                  weights=[x["labeled"] for x in r["runs"]]) if r["auto"] else None
            held = np.average([x["held_out"] for x in r["runs"]],
                              weights=[x["labeled"] for x in r["runs"]]) if r["auto"] else None
            print(f"{seed:>4} {r['humans']:>6} {r['humans'] / r['pool']:>6.1%} {r['auto']:>6}"
                  f" {r['left']:>5} {r['right_share']:>10.1%}"
                  f" {(r['auto_right'] / r['auto']) if r['auto'] else float('nan'):>15.1%}"
                  f" {expected if expected is not None else float('nan'):>9.1%}"
                  f" {held if held is not None else float('nan'):>9.1%} {r['seconds']:>8.0f}")
            for x in r["runs"]:
                print(f"       after {x['humans']:>5} human labels: {x['labeled']:>5} labeled"
                      f"{' (finishing)' if x['finish'] else ''},"
                      f" {x['right'] / x['labeled']:.1%} right, expected {x['expected']:.1%},"
                      f" held-out {x['held_out']:.1%}, spot check {x['spot']}")
            step = max(1, len(r["ready"]) // 8)
            print("       the model could label (at the target) after N human labels: "
                  + ", ".join(f"{n}: {k}/{p}" for n, p, k in r["ready"][::step]))
            o = r["overall"]
            if o and o["checked"]:
                print(f"       all auto-labels: {r['realised']:.1%} right; spot checks"
                      f" ({o['checked']} answered) measure {o['accuracy']:.1%}"
                      f" ({o['low']:.1%}-{o['high']:.1%}), calibration {o['expected']:.1%}")
            d = r["dataset"]
            if d:
                print(f"       the dataset: {r['right_share']:.1%} right; the spot checks measure"
                      f" {d['accuracy']:.1%} ({d['low']:.1%}-{d['high']:.1%})")
        print(f"mean human share {np.mean([r['humans'] / r['pool'] for r in results]):.1%},"
              f" all labels right {np.mean([r['right_share'] for r in results]):.1%}")
        measured = [r for r in results if r["overall"] and r["overall"]["checked"]]
        if measured:
            covered = sum(r["overall"]["low"] <= r["realised"] <= r["overall"]["high"]
                          for r in measured)
            gap = [abs(r["overall"]["expected"] - r["realised"]) for r in measured]
            print(f"spot checks: the 90 % interval covered the auto-labels' realised precision"
                  f" in {covered} of {len(measured)} seeds; the calibration estimate was off"
                  f" by {np.mean(gap):.1%} on average (at most {max(gap):.1%});"
                  f" {np.mean([r['spot'] for r in results]):.0f} spot-check labels a seed")


if __name__ == "__main__":
    main()
