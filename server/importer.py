"""Import a folder of images: find the files, check each one, add the good ones, report the rest.

A bad file never stops an import: it is skipped with a reason in the report. Images inside a
first-level folder named like a class arrive labeled (an annotation from source 'import').
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlite_utils import Database

from . import store
from .imaging import EXTENSIONS, ImageRejected, load_rgb

BATCH = 500
PARALLEL_FROM = 1000  # below this many files, worker processes cost more than they save


class ImportFailed(Exception):
    """The import as a whole cannot run (no such folder); single bad files never raise."""


@dataclass
class ImportReport:
    import_id: int
    source: str
    found: int = 0
    added: int = 0
    labeled: int = 0
    ignored: int = 0
    issues: list[dict] = field(default_factory=list)  # {path, kind, reason}
    unmatched_folders: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[dict]:
        return [i for i in self.issues if i["kind"] == "skipped"]

    @property
    def duplicates(self) -> list[dict]:
        return [i for i in self.issues if i["kind"] == "duplicate"]

    def summary(self) -> str:
        text = (
            f"{self.added} images added ({self.labeled} labeled from class folders), "
            f"{len(self.duplicates)} duplicates, {len(self.skipped)} skipped, "
            f"{self.ignored} other files ignored"
        )
        if self.unmatched_folders:
            text += (
                "; folders that are not classes (imported unlabeled): "
                + ", ".join(sorted(self.unmatched_folders))
            )
        return text


def _outside(path: Path, root: Path) -> bool:
    return not path.resolve().is_relative_to(root)


def scan(root: Path) -> tuple[list[Path], list[dict], int]:
    """Image files below root (sorted), issues for links, and how many files were ignored
    (hidden files and folders, other extensions)."""
    files: list[Path] = []
    issues: list[dict] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames):
            sub = here / name
            if name.startswith("."):
                dirnames.remove(name)
            elif sub.is_symlink():
                dirnames.remove(name)
                reason = (
                    "link points outside the image folder"
                    if _outside(sub, root)
                    else "linked folder not followed (its images are reached directly)"
                )
                issues.append({"path": str(sub), "kind": "skipped", "reason": reason})
        dirnames.sort()
        for name in sorted(filenames):
            path = here / name
            if name.startswith(".") or path.suffix.lower() not in EXTENSIONS:
                ignored += 1
            elif path.is_symlink() and _outside(path, root):
                issues.append(
                    {"path": str(path), "kind": "skipped",
                     "reason": "link points outside the image folder"}
                )
            else:
                files.append(path)
    return files, issues, ignored


def check_file(path: Path, max_pixels: int) -> dict:
    """Hash and fully decode one file. Returns the image's facts, or {'reason': ...}."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return {"reason": f"cannot read: {exc.strerror or exc}"}
    try:
        _, facts = load_rgb(path, max_pixels)
    except ImageRejected as exc:
        return {"reason": str(exc)}
    facts["sha256"] = hashlib.sha256(data).hexdigest()
    return facts


def _checked(paths: list[Path], max_pixels: int, workers: int | None) -> Iterator[dict]:
    check = partial(check_file, max_pixels=max_pixels)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers > 1 and len(paths) >= PARALLEL_FROM:
        # spawn, not fork: the web server that may call this runs threads.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            yield from pool.map(check, paths, chunksize=64)
    else:
        yield from map(check, paths)


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
) -> ImportReport:
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ImportFailed(f"{folder} is not a folder")
    paths, issues, ignored = scan(root)
    if on_start:
        on_start(len(paths))
    report = ImportReport(
        import_id=store.start_import(db, str(root)), source=str(root), found=len(paths),
        ignored=ignored, issues=issues,
    )
    class_ids = {c["name"]: c["id"] for c in store.classes(db)}
    unmatched: set[str] = set()
    seen: dict[str, str] = {}
    batch: list[dict] = []

    def flush() -> None:
        existing = store.known_hashes(db, [b["sha256"] for b in batch])
        fresh = []
        for image in batch:
            if image["sha256"] in existing:
                report.issues.append(
                    {"path": image["path"], "kind": "duplicate",
                     "reason": f"already in the project as {existing[image['sha256']]}"}
                )
            else:
                fresh.append(image)
        store.add_images(db, report.import_id, fresh, seed=seed, votes_needed=votes_needed)
        report.added += len(fresh)
        report.labeled += sum(1 for image in fresh if image.get("class_id") is not None)
        batch.clear()

    for path, facts in zip(paths, _checked(paths, max_pixels, workers)):
        if progress:
            progress(1)
        if "reason" in facts:
            report.issues.append({"path": str(path), "kind": "skipped", "reason": facts["reason"]})
            continue
        if facts["sha256"] in seen:
            report.issues.append(
                {"path": str(path), "kind": "duplicate",
                 "reason": f"same content as {seen[facts['sha256']]}"}
            )
            continue
        seen[facts["sha256"]] = str(path)
        rel = path.relative_to(root)
        class_id = None
        if len(rel.parts) > 1:
            class_id = class_ids.get(rel.parts[0])
            if class_id is None:
                unmatched.add(rel.parts[0])
        batch.append({**facts, "path": str(path), "rel_path": rel.as_posix(), "class_id": class_id})
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    report.unmatched_folders = sorted(unmatched)
    store.finish_import(
        db,
        report.import_id,
        {
            "added": report.added,
            "labeled": report.labeled,
            "duplicates": len(report.duplicates),
            "skipped": len(report.skipped),
            "ignored": report.ignored,
        },
        report.issues,
    )
    return report


def class_folders(folder: str | Path) -> list[str]:
    """First-level, non-hidden sub-folders: the classes of a folder-per-class layout."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ImportFailed(f"{folder} is not a folder")
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        and not p.is_symlink()
    )
