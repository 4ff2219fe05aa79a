"""Import a folder of images: find the files, check each one, add the good ones, report the rest.

A bad file never stops an import: it is skipped with a reason in the report. Where each image
belongs (a class, unlabeled, doubtful, a split) is the folder layout's to say (`layout.py`),
or a label file's (`label_file.py`), which wins for the files it names. An image already in
the project (the same content) is never added twice, and gets the import's answer only if
nobody has answered it yet; what the import understood is in the report (`import_report.py`).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from sqlite_utils import Database

from .. import store
from .imaging import EXTENSIONS, ImageRejected, check_image
from .import_report import ImportReport, Understood, warnings
from .label_file import LabelFile, unknown_classes
from .layout import ImportFailed, Layout, Placement, class_folders, shown, undecodable

__all__ = ["ImportFailed", "ImportReport", "check_file", "class_folders", "import_folder", "scan"]

BATCH = 500
PARALLEL_FROM = 1000  # below this many files, worker processes cost more than they save


def _link_problem(path: Path, root: Path) -> str | None:
    """Why a symbolic link below root cannot be imported, or None when it can: the files
    the server may read are those under the image folder the admin named, nothing else."""
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        return "broken link (its target does not exist)"
    except (RuntimeError, OSError):  # RuntimeError: a link loop, before Python 3.13
        return "link cannot be followed (a loop, or a target that cannot be read)"
    if not target.is_relative_to(root):
        return "link points outside the image folder"
    return None


def _skipped(path: Path, reason: str) -> dict:
    return {"path": shown(path), "kind": "skipped", "reason": reason}


def _prune_folders(here: Path, dirnames: list[str], root: Path, issues: list[dict]) -> None:
    """Keep the sub-folders os.walk should enter, in order. Hidden ones are left out quietly;
    linked ones are not followed (inside the folder their images are reached directly)."""
    keep = []
    for name in sorted(dirnames):
        sub = here / name
        if name.startswith("."):
            continue
        if undecodable(sub):
            issues.append(_skipped(sub, "folder name is not valid UTF-8; rename it"))
        elif sub.is_symlink():
            reason = _link_problem(sub, root) or (
                "linked folder not followed (its images are reached directly)"
            )
            issues.append(_skipped(sub, reason))
        else:
            keep.append(name)
    dirnames[:] = keep


def scan(root: Path) -> tuple[list[Path], list[dict], int]:
    """Image files below root (sorted), issues for the files that cannot be taken (links
    that lead out, names that are not UTF-8), and how many files were ignored (hidden files,
    other extensions). Hidden folders are not entered."""
    files: list[Path] = []
    issues: list[dict] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        _prune_folders(here, dirnames, root, issues)
        for name in sorted(filenames):
            path = here / name
            if name.startswith(".") or path.suffix.lower() not in EXTENSIONS:
                ignored += 1
            elif undecodable(path):
                issues.append(_skipped(path, "file name is not valid UTF-8; rename it"))
            elif path.is_symlink() and (problem := _link_problem(path, root)):
                issues.append(_skipped(path, problem))
            else:
                files.append(path)
    return files, issues, ignored


def _sha256(path: Path) -> str:
    """Streamed, so a huge file that turns out not to be an image is never held in memory."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def check_file(path: Path, max_pixels: int) -> dict:
    """Hash and fully decode one file. Returns the image's facts, or {'reason': ...}.
    Never raises for a bad file: one file must not stop an import."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            # A FIFO or device named like an image would block or never end on read.
            return {"reason": "not a regular file"}
        digest = _sha256(path)
    except OSError as exc:
        return {"reason": f"cannot read: {exc.strerror or exc}"}
    try:
        facts = check_image(path, max_pixels)
    except ImageRejected as exc:
        return {"reason": str(exc)}
    except Exception as exc:  # the per-file boundary: see why below
        # Pillow's decoders raise many types on hostile input; load_rgb names the known
        # ones, and anything new still skips this file (type in the reason) rather than
        # ending the import with the files after it never looked at.
        return {"reason": f"cannot decode: {type(exc).__name__}: {exc}"}
    facts["sha256"] = digest
    return facts


def _checked(
    paths: list[Path], max_pixels: int, workers: int | None, parallel_from: int
) -> Iterator[dict]:
    """check_file over paths, in order; in worker processes when there are enough files."""
    check = partial(check_file, max_pixels=max_pixels)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers > 1 and len(paths) >= parallel_from:
        # spawn, not fork: the web server that may call this runs threads.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            yield from pool.map(check, paths, chunksize=64)
    else:
        yield from map(check, paths)


def _placed(rel: Path, layout: Layout, labels: LabelFile | None,
            class_ids: dict[str, int]) -> tuple[Placement, bool]:
    """Where an image belongs, and whether the label file said so (it wins for its rows)."""
    placement = layout.place(rel)
    row = labels.rows.get(rel.as_posix()) if labels else None
    if row is None:
        return placement, False
    return Placement("label", class_ids[row[0]], placement.split, placement.folder), True


def _tally(understood: Understood, placement: Placement, by_file: bool,
           names: dict[int, str]) -> None:
    if placement.answer == "label":
        understood.classes[names[placement.class_id]] += 1
        if by_file:
            understood.from_label_file += 1
        else:
            understood.class_folders.add(names[placement.class_id])
    elif placement.answer == "unsure":
        understood.maybe += 1
        understood.maybe_folders.add(placement.folder or "")
    else:
        understood.unlabeled += 1
        understood.unlabeled_folders.add(placement.folder or "")
    if placement.split:
        understood.splits[placement.split] += 1


def import_folder(
    db: Database,
    folder: str | Path,
    *,
    seed: int,
    votes_needed: int,
    max_pixels: int,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    workers: int | None = None,
    parallel_from: int = PARALLEL_FROM,
    labels: LabelFile | None = None,
    add_classes: bool = False,
    unlabeled_folders: Iterable[str] = (),
) -> ImportReport:
    """Import the images below `folder` into db; see the module docstring. `labels` is a
    label file read (and so checked) already; its classes the project lacks are an error,
    or with `add_classes` added. `unlabeled_folders` name more folders of unlabeled images.
    `workers` (default: one per CPU) and `parallel_from` decide when files are checked in
    worker processes."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ImportFailed(f"{shown(folder)} is not a folder")
    if undecodable(root):
        raise ImportFailed(f"{shown(root)}: the folder's path is not valid UTF-8; rename it")
    if labels is not None:  # before anything is written: a bad class changes nothing
        known = {c["name"] for c in store.classes(db)}
        if missing := unknown_classes(labels, known, add_classes):
            store.add_classes(db, missing)
    paths, issues, ignored = scan(root)
    if on_start:
        on_start(len(paths))
    report = ImportReport(
        import_id=store.start_import(db, str(root)), source=str(root), found=len(paths),
        ignored=ignored, issues=issues,
    )
    class_ids = {c["name"]: c["id"] for c in store.classes(db)}
    names = {class_id: name for name, class_id in class_ids.items()}
    layout = Layout.of(root, class_ids, unlabeled_folders)
    understood = report.understood
    understood.classes.update({name: 0 for name in class_ids})  # listed in the project's order
    unmatched: set[str] = set()
    seen: dict[str, str] = {}
    batch: list[dict] = []

    def flush() -> None:
        existing = store.known_hashes(db, [b["sha256"] for b in batch])
        known = [image for image in batch if image["sha256"] in existing]
        answered = store.answer_unanswered(db, [image for image in known if image["answer"]])
        understood.answered_known += len(answered)
        for image in known:
            reason = f"already in the project as {existing[image['sha256']]}"
            if image["sha256"] in answered:
                reason += f"; it had no answer and got this import's ({image['answer']})"
            elif image["answer"]:
                reason += "; it has answers, kept as they are"
            report.issues.append({"path": image["path"], "kind": "duplicate", "reason": reason})
        fresh = [image for image in batch if image["sha256"] not in existing]
        store.add_images(db, report.import_id, fresh, seed=seed, votes_needed=votes_needed)
        report.added += len(fresh)
        for image in fresh:
            if image["answer"] == "label":
                if image["by_file"]:
                    report.from_label_file += 1
                else:
                    report.labeled += 1
        batch.clear()

    for path, facts in zip(paths, _checked(paths, max_pixels, workers, parallel_from)):
        if progress:
            progress(1)
        if "reason" in facts:
            report.issues.append(_skipped(path, facts["reason"]))
            continue
        if facts["sha256"] in seen:
            report.issues.append(
                {"path": str(path), "kind": "duplicate",
                 "reason": f"same content as {seen[facts['sha256']]}"}
            )
            continue
        seen[facts["sha256"]] = str(path)
        rel = path.relative_to(root)
        placement, by_file = _placed(rel, layout, labels, class_ids)
        if placement.unmatched and not by_file:
            unmatched.add(placement.folder)
        _tally(understood, placement, by_file, names)
        batch.append({**facts, "path": str(path), "rel_path": rel.as_posix(),
                      "answer": placement.answer, "class_id": placement.class_id,
                      "split": placement.split, "by_file": by_file})
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    if labels is not None:
        understood.label_file, understood.label_rows = labels.name, len(labels.rows)
        found = {path.relative_to(root).as_posix() for path in paths}
        for rel, (_label, line) in sorted(labels.rows.items(), key=lambda item: item[1][1]):
            if rel not in found:
                report.issues.append({
                    "path": shown(root / rel), "kind": "not found",
                    "reason": f"line {line} of {labels.name} names it; no such image in"
                              " the folder (its label is not used)"})
    report.unmatched_folders = sorted(unmatched)
    report.warnings = warnings(understood)
    store.finish_import(
        db,
        report.import_id,
        {
            "added": report.added,
            "labeled": report.labeled + report.from_label_file,
            "duplicates": len(report.duplicates),
            "skipped": len(report.skipped),
            "ignored": report.ignored,
        },
        report.issues,
        understood={**understood.as_dict(), "added_from_label_file": report.from_label_file},
        warnings=report.warnings,
    )
    return report
