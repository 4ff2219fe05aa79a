"""Simulated annotators that drive the real product over HTTP.

`simulate` builds a fresh copy of a project (same images and classes, no labels, the
embedding cache copied so nothing is embedded twice), starts `activelabel serve --no-worker`
and `activelabel worker` on it, then loops: the simulated annotators, each logged in on its
own, label a batch in the browser's way (GET /label, POST /label/<id>) answering from the
oracle file (with their own rate of mistakes, see `simulated_annotators`); the admin presses
'Retrain now' and waits for the round; the round's predictions on held-out test images give
the accuracy. The learning curve is written as CSV and PNG.

With several annotators the copy asks for one vote from each on every image
(votes_per_image = their number), so the budget counts images, each answered by all of
them: the votes given are the budget times the number of annotators. The images' consensus
then decides what trains; only agreed (or adjudicated) labels do.

What is labeled and what is held out for testing: `simulation_plan`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import store
from ..config import Project
from ..dataset import csv_writer
from ..projects import add_user, open_db
from .annotators import ActionTally, annotator_names, noisy_answers
from .bulk import cluster_batch, start_clustering, verify_batch
from .live_server import (
    Browser,
    SimulationError,
    _Processes,
    _wait_until_up,
    free_port,
)
from .plan import Plan, source_classes, source_images

ROUND_SECONDS = 3600  # one round, queued to done, on a slow CPU with a large pool
# A round that fails for this reason (one class labeled so far) is expected early on.
TOO_FEW_CLASSES = "at least two classes"


@dataclass
class Point:
    labels: int  # images answered by every simulated annotator
    accuracy: float  # on the held-out test images
    round_id: int
    cv_accuracy: float | None  # the round's own cross-validated estimate
    scored: int  # test images scored
    votes: int = 0  # votes given by all simulated annotators together
    trained: int | None = None  # consensus labels (agreed or adjudicated) the round used
    actions: int = 0  # key presses and clicks spent so far (see simulated_annotators)


@dataclass
class Curve:
    strategy: str
    points: list[Point] = field(default_factory=list)
    mode: str = "single"  # how the images were labeled: single | grid | cluster
    tally: ActionTally = field(default_factory=ActionTally)

    @property
    def name(self) -> str:
        return self.strategy if self.mode == "single" else f"{self.strategy} {self.mode}"


def copy_embeddings(from_images: dict[str, int], from_cache: Path,
                    to_images: dict[str, int], to_cache: Path) -> int:
    """Copy embedding rows between two projects' caches, matching images by content
    (sha256 -> id in each). Reads the source's files without opening them for writing.
    Returns the number of rows copied."""
    from ..learner.cache import EmbeddingCache

    copied = 0
    root = Path(from_cache) / "embeddings"
    if not root.is_dir():
        return 0
    pairs = [(from_images[sha], new) for sha, new in to_images.items() if sha in from_images]
    if not pairs:
        return 0
    old_ids, new_ids = (np.array(column, dtype=np.int64) for column in zip(*pairs))
    for folder in sorted(p for p in root.iterdir() if (p / "meta.json").is_file()):
        try:
            dim = int(json.loads((folder / "meta.json").read_text())["dim"])
            filled = np.fromfile(folder / "filled.u8", dtype=np.uint8)
            vectors = np.memmap(folder / "vectors.f16", np.float16, "r",
                                shape=(len(filled), dim))
        except (OSError, ValueError, KeyError):
            continue  # an empty or damaged cache: the round embeds what it needs
        inside = old_ids < len(filled)
        keep = np.zeros(len(old_ids), bool)
        keep[inside] = filled[old_ids[inside]] == 1
        if not keep.any():
            continue
        target = EmbeddingCache(Path(to_cache) / "embeddings" / folder.name, dim)
        todo = np.isin(new_ids, target.missing(new_ids[keep]))
        keep &= todo
        target.put(new_ids[keep], np.asarray(vectors[old_ids[keep]]))
        target.flush()
        copied += int(keep.sum())
    return copied


def copy_project(source: Project, target: Path, embedding_sources: Iterable[Project] = (),
                 votes_per_image: int = 1, query_batch: int = 0) -> tuple[Project, dict[str, int]]:
    """A fresh project over the same images and classes with no labels (even where the
    source took labels from class folders), the same model and consensus settings but
    `votes_per_image` and `query_batch` (the simulation's batch: its rounds, started after
    each batch, rank that many first), no automatic rounds and its own job queue. Embeddings
    are copied from the source and from `embedding_sources` (earlier copies). Returns the
    project and sha256 -> image id."""
    config = dataclasses.replace(
        source.config, name=target.name, votes_per_image=votes_per_image, retrain_every=0,
        query_batch=query_batch, redis_url="",
    )
    project = Project.create(target, config)
    images = source_images(source)
    db = open_db(project)  # the copy's consensus rules decide which images are QA images
    try:
        store.add_classes(db, source_classes(source))
        import_id = store.start_import(db, f"copy of {source.root}")
        fresh = [{k: v for k, v in image.items() if k != "id"} for image in images]
        new_ids = store.add_images(db, import_id, fresh, seed=config.seed,
                                   votes_needed=votes_per_image)
        store.finish_import(db, import_id, {"added": len(new_ids), "labeled": 0,
                                            "duplicates": 0, "skipped": 0, "ignored": 0}, [])
    finally:
        db.conn.close()
    ids = {image["sha256"]: new for image, new in zip(images, new_ids)}
    for donor in [source, *embedding_sources]:
        donor_ids = {image["sha256"]: image["id"] for image in source_images(donor)}
        copy_embeddings(donor_ids, donor.cache_dir, ids, project.cache_dir)
    return project, ids


def run_simulation(
    source: Project, plan: Plan, strategy: str, budget: int, batch: int, workdir: Path,
    embedding_sources: Iterable[Project] = (), log: Callable[[str], None] = print,
    round_seconds: float = ROUND_SECONDS, accuracies: Sequence[float] = (1.0,),
    mode: str = "single", clusters: int | None = None,
) -> tuple[Curve, Project]:
    """Simulate one strategy on a fresh copy of `source` in workdir/sim-<strategy> (with
    -<mode> for the grid modes), with one simulated annotator per entry of `accuracies`
    (each answers every image; `budget` and `batch` count images). `mode` grid or cluster
    labels through grid verify or the cluster bootstrap (one annotator; see
    `simulate_bulk`). Returns the learning curve and the copy (whose embeddings later
    copies can reuse)."""
    if mode != "single" and len(accuracies) != 1:
        raise SimulationError(f"--mode {mode} simulates one annotator, not {len(accuracies)}")
    folder = f"sim-{strategy}" if mode == "single" else f"sim-{strategy}-{mode}"
    project, ids = copy_project(source, Path(workdir) / folder, embedding_sources,
                                votes_per_image=len(accuracies), query_batch=batch)
    names = annotator_names(len(accuracies))
    passwords = {name: add_user(project, name, role) for name, role in
                 [("sim-admin", "admin"), *((name, "annotator") for name in names)]}
    db = store.connect(project.db_path)
    class_ids = {c["name"]: c["id"] for c in store.classes(db)}
    db.conn.close()
    truth = {ids[sha]: label for sha, label in plan.truth.items()}
    answers = [
        {ids[sha]: label for sha, label in
         noisy_answers(plan.truth, list(class_ids), accuracy, source.config.seed,
                       position).items()}
        for position, accuracy in enumerate(accuracies)
    ]
    test_ids = {ids[sha] for sha in plan.test}
    processes = _Processes(project, free_port())
    url = f"http://127.0.0.1:{processes.port}"
    curve = Curve(strategy, mode=mode)
    tally = curve.tally
    class_names = {class_id: name for name, class_id in class_ids.items()}
    strategy = curve.name  # how the log lines name this run
    log(f"{strategy}: simulating on {project.root} ({url}; logs server.log, worker.log)")
    try:
        processes.start()
        _wait_until_up(url, processes)
        annotators = [Browser(url) for _ in names]
        for browser, name in zip(annotators, names, strict=True):
            browser.login(name, passwords[name])
        admin = Browser(url)
        admin.login("sim-admin", passwords["sim-admin"])
        if mode == "cluster":
            start_clustering(admin, processes, clusters, round_seconds, log)
        labeled = votes = 0
        predicted = False  # a round has finished: grid verify has pages
        last_class = [None]
        while labeled < budget:
            wanted = min(batch, budget - labeled)
            done = 0
            if mode == "cluster":
                done = cluster_batch(annotators[0], wanted, answers[0], test_ids, class_ids,
                                     tally)
            elif mode == "grid" and predicted:
                done = verify_batch(annotators[0], wanted, answers[0], test_ids, class_names,
                                    tally, last_class)
            if done < wanted:
                if mode != "single" and (mode == "cluster" or predicted):
                    log(f"{strategy}: no grid left; labeling {wanted - done} one by one")
                # The first annotator takes the next images in the queue's order; each of
                # the others is handed the same ones (they need its vote too) and answers
                # as many.
                done += _label_batch(annotators[0], wanted - done, answers[0], test_ids,
                                     class_ids, tally)
            votes += done
            for browser, name, own in zip(annotators[1:], names[1:], answers[1:],
                                          strict=True):
                given = _label_batch(browser, done, own, test_ids, class_ids, tally)
                if given != done:
                    log(f"{strategy}: note: {name} answered {given} images, {names[0]} {done}")
                votes += given
            labeled += done
            if done == 0:
                log(f"{strategy}: no image is left to label; stopping at {labeled} labels")
                break
            point = _retrain(admin, processes, curve.strategy, truth, test_ids, round_seconds,
                             log)
            if point is not None:
                predicted = True
                point.actions = tally.actions
                if len(names) == 1 and point.labels != labeled:
                    log(f"{strategy}: note: the round trained on {point.labels} labels,"
                        f" the annotator gave {labeled}")
                point.trained, point.labels, point.votes = point.labels, labeled, votes
                curve.points.append(point)
                estimate = (f", its own estimate {point.cv_accuracy:.3f}"
                            if point.cv_accuracy is not None else "")
                consensus = (f" ({votes} votes, {point.trained} consensus labels trained)"
                             if len(names) > 1 else "")
                log(f"{strategy}: {labeled} labels{consensus}, test accuracy"
                    f" {point.accuracy:.3f} on {point.scored} held-out images"
                    f" (round {point.round_id}{estimate})")
            if done < wanted:
                log(f"{strategy}: no image is left to label; stopping at {labeled} labels")
                break
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SimulationError(
            f"lost the server at {url} ({reason}); " + (processes.dead()
                                                         or processes.stopped("server"))
        ) from exc
    finally:
        processes.stop()
    return curve, project


def _label_batch(browser: Browser, count: int, answers: dict, test_ids: set,
                 class_ids: dict, tally: ActionTally | None = None) -> int:
    """Answer up to `count` images with this annotator's `answers` (image id -> class
    name); held-out test images and images without a true label are skipped. Returns the
    labels given; each answer (skips too) is one action in `tally`."""
    done = 0
    page = browser.request("/label", htmx=True)
    while done < count:
        match = re.search(r'data-image-id="(\d+)"', page)
        if not match:
            break  # nothing left to label
        image_id = int(match.group(1))
        label = answers.get(image_id)
        if image_id in test_ids or label is None:
            choice = "skip"
        else:
            choice = str(class_ids[label])
            done += 1
        page = browser.request(f"/label/{image_id}", {"choice": choice}, htmx=True)
        if tally is not None:  # a skip the simulation forces costs a person nothing
            tally.single(labeled=choice != "skip", free=choice == "skip")
    return done


def _retrain(browser: Browser, processes: _Processes, strategy: str, truth: dict,
             test_ids: set, seconds: float, log: Callable[[str], None]) -> Point | None:
    """Press 'Retrain now', wait for the round, score its predictions on the test images.
    None when the round could not train yet (labels in one class only)."""
    answer = browser.request("/admin/rounds/", {"strategy": strategy}, htmx=True)
    match = re.search(r"Round (\d+)", answer)
    if not match:
        raise SimulationError(f"'Retrain now' did not answer with a round: {answer[:300]}")
    round_id = int(match.group(1))
    deadline = time.monotonic() + seconds
    while True:
        status = browser.request("/admin/rounds/status", htmx=True)
        if "hx-get" not in status:  # the fragment stops polling when no round is active
            break
        problem = processes.dead()
        if problem:
            raise SimulationError(f"round {round_id} cannot finish: {problem}")
        if time.monotonic() > deadline:
            raise SimulationError(f"round {round_id} did not finish within {seconds:.0f} s; "
                                  + processes.stopped("worker"))
        time.sleep(0.3)
    latest = json.loads(browser.request("/admin/rounds/latest.json"))
    if latest.get("id") != round_id:
        raise SimulationError(f"expected round {round_id} to be the latest, got {latest}")
    if latest.get("status") != "done":
        error = latest.get("error") or "no reason given"
        if TOO_FEW_CLASSES in error:
            log(f"{strategy}: round {round_id} could not train yet: {error}")
            return None
        raise SimulationError(f"round {round_id} {latest.get('status')}: {error}; "
                              + processes.stopped("worker"))
    text = browser.request(f"/admin/rounds/{round_id}/predictions.csv")
    scored = [(int(r["image_id"]), csv_writer.read_cell(r["predicted"]))
              for r in csv.DictReader(io.StringIO(text))
              if int(r["image_id"]) in test_ids]
    if not scored:
        raise SimulationError(f"round {round_id} predicted none of the held-out images")
    if len(scored) < len(test_ids):
        log(f"{strategy}: round {round_id} predicted {len(scored)} of {len(test_ids)}"
            " held-out images (the others could not be read)")
    accuracy = sum(truth[i] == predicted for i, predicted in scored) / len(scored)
    return Point(int(latest.get("labels_used") or 0), accuracy, round_id,
                 latest.get("accuracy"), len(scored))


def write_curves(curves: list[Curve], out: Path, title: str = "",
                 xlabel: str = "labels given") -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "learning_curve.csv", out / "learning_curve.png"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv_writer.writer(handle)
        writer.writerow(["strategy", "labels", "test_accuracy", "test_images", "round",
                         "estimated_accuracy", "votes", "trained_labels", "mode", "actions"])
        for curve in curves:
            writer.writerows(
                (curve.strategy, p.labels, f"{p.accuracy:.4f}", p.scored, p.round_id,
                 "" if p.cv_accuracy is None else f"{p.cv_accuracy:.4f}", p.votes,
                 "" if p.trained is None else p.trained, curve.mode, p.actions)
                for p in curve.points
            )
    try:
        import matplotlib
    except ImportError as exc:
        raise SimulationError(
            f"wrote {csv_path}, but the plot needs matplotlib (pip install matplotlib)"
        ) from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    for curve in curves:
        if curve.points:
            axes.plot([p.labels for p in curve.points], [p.accuracy for p in curve.points],
                      marker="o", markersize=4, label=curve.name)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("accuracy on held-out images")
    axes.set_ylim(0, 1)
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)
    if title:
        axes.set_title(title, fontsize=10)
    if any(curve.points for curve in curves):
        axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)
    return csv_path, png_path
