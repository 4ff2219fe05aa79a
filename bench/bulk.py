"""Labels per keystroke: one by one, grid verify and cluster bootstrap, on Fashion-MNIST.

Pool: the first 20,000 training images; test: the 10,000 test images. Each mode runs on its
own real project (SQLite, the store's functions, the learner's embedding cache in
bench/out/cache shared with bench/label_efficiency.py, rounds and clusterings as the worker
runs them), with a simulated annotator who knows the truth, up to the same label budget:

  single   the labeling queue one image at a time: the first batch in the seeded shuffle,
           then a margin round after every batch ranks the rest;
  grid     one batch one by one, a round, then grid verify: a page of the class whose
           first page the model is surest of (the page's default), most confident first;
           a round after every batch;
  cluster  the cluster bootstrap: a clustering of the pool (k: the silhouette's
           suggestion, or --clusters), then the clusters page by page, tightest first.

What counts as an action (see server/simulated_annotators.py): one key press or click. One
by one: a key per image. A page: the class key (cluster: unless picked on the cluster's
previous page; verify: when it changes), a click per toggled image, Enter; a mixed
cluster: s. 'keyboard only' counts arrow presses and space instead of clicks (8 columns).
The annotator labels a cluster page when at least 75 % of it is one class, else marks the
cluster mixed. With --overlook p it misses each odd one out (or wrong prediction) with
probability p, which then gets the page's label.

Prints labels per 100 actions, the share of the labels that are right, the model's test
accuracy trained on them (the product's head, on all labels given), and writes it all to
bench/out/bulk.txt.

    python bench/bulk.py [--budget 2000] [--batch 200] [--overlook 0,0.1]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fashion import NAMES, load, write_pngs  # noqa: E402

from server import store  # noqa: E402
from server.config import Project, ProjectConfig  # noqa: E402
from server.jobs.clustering import run_clustering  # noqa: E402
from server.jobs.round import run_round
from server.learner import Learner  # noqa: E402
from server.learner.setup import learner_config  # noqa: E402
from server.simulation.annotators import (  # noqa: E402
    ActionTally,
    judge_cluster_page,
    judge_verify_page,
)
from server.store import cluster_pages, job_rows, verify_pages  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
PAGE = 48
TEST_ID = 100_001  # test image j has id 100,001 + j in the shared cache (train i: i + 1)


class Bench:
    def __init__(self, root: Path, mode: str, pool: int, seed: int, overlook: float,
                 train_y: np.ndarray, paths: list[str]):
        self.mode, self.overlook = mode, overlook
        self.rng = np.random.default_rng([seed, int(overlook * 1000)])
        if root.exists():
            shutil.rmtree(root)
        config = ProjectConfig(name=root.name, seed=seed, qa_fraction=0.0, strategy="margin",
                               training_mode="head", loader_workers=0)
        self.project = Project.create(root, config)
        self.db = store.connect(self.project.db_path)
        store.set_rules(self.db, store.Rules.of(config))
        store.add_classes(self.db, NAMES)
        self.class_ids = {c["name"]: c["id"] for c in store.classes(self.db)}
        import_id = store.start_import(self.db, "fashion-mnist")
        rows = [{"sha256": f"{i:064x}", "path": paths[i], "rel_path": Path(paths[i]).name,
                 "width": 28, "height": 28, "format": "PNG", "mode": "L", "bytes": 1}
                for i in range(pool)]
        ids = store.add_images(self.db, import_id, rows, seed=seed, votes_needed=1)
        assert ids == list(range(1, pool + 1)), "image ids must match the shared cache's"
        self.user = store.add_user(self.db, "oracle", "annotator", "x")
        self.truth = {i + 1: NAMES[int(train_y[i])] for i in range(pool)}
        self.learner = Learner(learner_config(self.project), OUT / "cache")
        self.tally = ActionTally()
        self.grid_seed, self.seed_labels = "single", None
        self.curve: dict[int, float] = {}  # labels -> test accuracy, one by one
        self.test_y = None
        self.since_round = 0
        self.rounds = 0

    # -- one by one -------------------------------------------------------------------------
    def label_one_by_one(self, count: int) -> int:
        done = 0
        while done < count:
            upcoming = store.next_images(self.db, self.user, n=1)
            if not upcoming:
                break
            image_id = upcoming[0]
            store.add_vote(self.db, self.user, image_id, "label",
                           self.class_ids[self.truth[image_id]], source="simulate")
            self.tally.single(labeled=True)
            done += 1
        self.since_round += done
        return done

    def retrain(self) -> None:
        round_id = job_rows.queue(self.db, "rounds", None, strategy="margin")[0]
        run_round(self.project, round_id, self.learner)
        self.since_round = 0
        self.rounds += 1

    # -- grids ------------------------------------------------------------------------------
    def _missed(self, toggled: list[int]) -> list[int]:
        """The toggles the annotator actually makes: each is overlooked with p."""
        return [i for i in toggled if self.rng.random() >= self.overlook]

    def cluster_page(self, clustering_id: int, budget: int, picked: dict) -> bool:
        cluster = cluster_pages.next_cluster(self.db, clustering_id, self.user)
        if cluster is None:
            return False
        page = cluster_pages.cluster_page(self.db, clustering_id, cluster, self.user,
                                          min(PAGE, budget - self.tally.labels))
        ids = [m["image_id"] for m in page["members"]]
        verdict = judge_cluster_page([self.truth[i] for i in ids])
        if verdict is None:
            cluster_pages.mark_mixed(self.db, self.user, clustering_id, cluster)
            self.tally.mixed_cluster()
            return True
        name, odd = verdict
        toggled = self._missed(odd)
        pick = picked.get(cluster) != name
        picked[cluster] = name
        result = cluster_pages.confirm_cluster(self.db, self.user, clustering_id, cluster,
                                               self.class_ids[name], ids, [ids[i] for i in toggled])
        self.tally.page(toggled, pick, result.labeled)
        self.since_round += result.labeled
        return True

    def verify_page(self, budget: int, last: list) -> bool:
        class_id = verify_pages.surest_class(verify_pages.verify_counts(self.db, self.user, PAGE))
        if class_id is None:
            return False
        round_id, items = verify_pages.verify_page(self.db, self.user, class_id, "confident",
                                                   min(PAGE, budget - self.tally.labels))
        ids = [r["image_id"] for r in items]
        name = next(n for n, i in self.class_ids.items() if i == class_id)
        toggled = self._missed(judge_verify_page([self.truth[i] for i in ids], name))
        result = verify_pages.accept_grid(self.db, self.user, round_id, class_id, ids,
                                          [ids[i] for i in toggled])
        self.tally.page(toggled, last[0] != class_id, result.labeled)
        last[0] = class_id
        self.since_round += result.labeled
        return True

    # -- the modes ----------------------------------------------------------------------------
    def run(self, budget: int, batch: int, clusters_k: int | None) -> dict:
        started = time.perf_counter()
        extra = {}
        if self.mode == "single":
            while self.tally.labels < budget:
                if not self.label_one_by_one(min(batch, budget - self.tally.labels)):
                    break
                # One by one, labels = actions: the curve that prices the other modes' effort.
                self.curve[self.tally.labels] = test_accuracy(self, self.score()["fitted"],
                                                              self.test_y)
                if self.tally.labels < budget:
                    self.retrain()
        elif self.mode == "grid":
            if self.grid_seed == "cluster":
                self.bootstrap(clusters_k, min(self.seed_labels or batch, budget))
            else:
                self.label_one_by_one(min(self.seed_labels or batch, budget))
            self.retrain()
            last = [None]
            while self.tally.labels < budget:
                if not self.verify_page(budget, last):
                    self.label_one_by_one(min(batch, budget - self.tally.labels))
                if self.since_round >= batch and self.tally.labels < budget:
                    self.retrain()
        else:
            extra = self.bootstrap(clusters_k, budget)
        return {**extra, "seconds": time.perf_counter() - started, **self.score()}

    def bootstrap(self, clusters_k: int | None, budget: int) -> dict:
        """Cluster the pool, then label cluster pages up to `budget` labels in all."""
        clustering_id, _ = job_rows.queue(self.db, "clusterings", None, k=clusters_k)
        summary = run_clustering(self.project, clustering_id, self.learner, thumbnails=False)
        picked: dict = {}
        while self.tally.labels < budget:
            if not self.cluster_page(clustering_id, budget, picked):
                self.label_one_by_one(budget - self.tally.labels)  # clusters exhausted
                break
        return {"clusters": summary["clusters"], "suggested": summary["suggested_k"],
                "method": summary["method"], "cluster_seconds": summary["seconds"]}

    def score(self) -> dict:
        labels = store.consensus_labels(self.db)  # image id -> class id
        names = {i: n for n, i in self.class_ids.items()}
        right = sum(names[c] == self.truth[i] for i, c in labels.items())
        ids = sorted(labels)
        fitted = self.learner.fit(ids, [""] * len(ids), [labels[i] for i in ids],
                                  pool_ids=list(self.truth), estimate=False)
        return {"confirmed": len(labels), "right": right, "fitted": fitted,
                "per_class": np.bincount([list(self.class_ids.values()).index(labels[i])
                                          for i in ids], minlength=len(NAMES))}


def test_accuracy(bench: Bench, fitted, test_y: np.ndarray) -> float:
    test_ids = np.arange(TEST_ID, TEST_ID + len(test_y))
    probs = fitted.model.predict_proba(bench.learner.embeddings(test_ids, np.float16))
    names = {i: n for n, i in bench.class_ids.items()}
    predicted = np.array([NAMES.index(names[c]) for c in np.asarray(fitted.class_ids)])
    return float(np.mean(predicted[probs.argmax(axis=1)] == test_y))


def same_effort(curve: dict[int, float], actions: int) -> str:
    """One by one's test accuracy at `actions` labels, read off its curve (linear between
    the points measured)."""
    points = sorted(curve.items())
    if not points or actions < points[0][0]:
        return f"n/a (first point at {points[0][0] if points else '?'} labels)"
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= actions <= x1:
            return f"{y0 + (y1 - y0) * (actions - x0) / (x1 - x0):.3f}"
    return f"{points[-1][1]:.3f}"


def ensure_embeddings(pool: int, train_x, test_x) -> list[str]:
    paths = write_pngs(train_x[:pool], OUT / "fashion" / "train", "train")
    test_paths = write_pngs(test_x, OUT / "fashion" / "test", "test")
    config = learner_config(Project(OUT, ProjectConfig(name="bench")))
    learner = Learner(config, OUT / "cache")
    ids = np.concatenate([np.arange(1, pool + 1), np.arange(TEST_ID, TEST_ID + len(test_x))])
    missing = learner.cache().missing(ids)
    if len(missing):
        print(f"embedding {len(missing)} images (once; cached in {OUT / 'cache'})", flush=True)
        learner.embed(ids, paths + test_paths)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200, help="labels between rounds")
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--clusters", type=int, default=None,
                        help="clusters to make (default: the silhouette's suggestion)")
    parser.add_argument("--overlook", default="0,0.1",
                        help="shares of odd ones out the annotator misses, comma-separated")
    parser.add_argument("--modes", default="single,grid,cluster")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train_x, train_y = load("train")
    test_x, test_y = load("test")
    paths = ensure_embeddings(args.pool, train_x, test_x)
    report = io.StringIO()

    def say(line: str = "") -> None:
        print(line, flush=True)
        report.write(line + "\n")

    say(f"Fashion-MNIST: pool {args.pool:,} training images, {len(test_y):,} test images;"
        f" budget {args.budget:,} labels, a round every {args.batch} labels (grid, single)")
    say("actions: one key press or click each (toggles by click; 'keys' = keyboard only,"
        " arrows + space)")
    say("")
    say(f"{'mode':<8} {'overlook':>8} {'labels':>7} {'actions':>8} {'per 100':>8}"
        f" {'keys':>6} {'per 100':>8} {'labels right':>13} {'test acc':>9} {'seconds':>8}")
    rows = []
    for mode in args.modes.split(","):
        for overlook in ([0.0] if mode == "single" else
                         [float(v) for v in args.overlook.split(",")]):
            bench = Bench(OUT / "bulk" / f"{mode}-{overlook:g}", mode, args.pool, args.seed,
                          overlook, train_y, paths)
            bench.test_y = test_y
            with redirect_stdout(io.StringIO()):
                result = bench.run(args.budget, args.batch, args.clusters)
            tally = bench.tally
            accuracy = test_accuracy(bench, result["fitted"], test_y)
            right = result["right"] / max(1, result["confirmed"])
            rows.append((mode, overlook, tally, result, accuracy))
            if mode == "single":
                curve = bench.curve
            say(f"{mode:<8} {overlook:>8.0%} {tally.labels:>7} {tally.actions:>8}"
                f" {100 * tally.labels / tally.actions:>8.1f} {tally.keys:>6}"
                f" {100 * tally.labels / tally.keys:>8.1f} {right:>13.2%} {accuracy:>9.3f}"
                f" {result['seconds']:>8.0f}")
            details = (f"  {tally.pages} pages, {tally.mixed} clusters marked mixed,"
                       f" {tally.one_by_one} labeled one by one, {bench.rounds} rounds")
            if "clusters" in result:
                details += (f"; {result['clusters']} clusters ({result['method']}, suggested"
                            f" {result['suggested']}) made in {result['cluster_seconds']:.0f} s")
            say(details)
            say("  labels per class: " + ", ".join(
                f"{name} {n}" for name, n in zip(NAMES, result["per_class"], strict=True)))
            bench.db.conn.close()
    base = next((t.labels / t.actions for m, _, t, _, _ in rows if m == "single"), None)
    if base:
        say("")
        say("one by one, test accuracy after: " + ", ".join(
            f"{n} labels {a:.3f}" for n, a in sorted(curve.items())))
        for mode, overlook, tally, _, accuracy in rows:
            if mode != "single":
                say(f"{mode} (overlook {overlook:.0%}): {tally.labels / tally.actions / base:.1f}x"
                    f" the labels per action of one by one ({tally.labels / tally.keys / base:.1f}x"
                    f" keyboard only); test accuracy {accuracy:.3f}, where one by one reaches"
                    f" {same_effort(curve, tally.actions)} with the same {tally.actions} actions")
    say("")
    say("reproduce: python bench/bulk.py " + " ".join(sys.argv[1:]))
    (OUT / "bulk.txt").write_text(report.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
