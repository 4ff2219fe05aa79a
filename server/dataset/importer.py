"""Import a folder of images: find the files, check each one, add the good ones, report the rest.

A bad file never stops an import: it is skipped with a reason in the report. Images inside a
first-level folder named like a class arrive labeled (an annotation from source 'import').
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlite_utils import Database

from .. import store
from .imaging import EXTENSIONS, ImageRejected, check_image

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


def _shown(path: str | Path) -> str:
    """A path as people (and SQLite) can take it: bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def _undecodable(path: str | Path) -> bool:
    """os.walk turns name bytes that are not UTF-8 into lone surrogates. Such a path cannot
    be stored (SQLite wants UTF-8), printed or shown in a page, so it cannot be imported."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
    return {"path": _shown(path), "kind": "skipped", "reason": reason}


def _prune_folders(here: Path, dirnames: list[str], root: Path, issues: list[dict]) -> None:
    """Keep the sub-folders os.walk should enter, in order. Hidden ones are left out quietly;
    linked ones are not followed (inside the folder their images are reached directly)."""
    keep = []
    for name in sorted(dirnames):
        sub = here / name
        if name.startswith("."):
            continue
        if _undecodable(sub):
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
            elif _undecodable(path):
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


def _class_of(rel: Path, class_ids: dict[str, int], unmatched: set[str]) -> int | None:
    """The class an image's first-level folder names (at any depth below it), or None for
    images at the top level; folders named like no class are noted in `unmatched`."""
    if len(rel.parts) < 2:
        return None
    class_id = class_ids.get(rel.parts[0])
    if class_id is None:
        unmatched.add(rel.parts[0])
    return class_id


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
) -> ImportReport:
    """Import the images below `folder` into db; see the module docstring. `workers`
    (default: one per CPU) and `parallel_from` decide when files are checked in worker
    processes."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ImportFailed(f"{_shown(folder)} is not a folder")
    if _undecodable(root):
        raise ImportFailed(f"{_shown(root)}: the folder's path is not valid UTF-8; rename it")
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
        class_id = _class_of(rel, class_ids, unmatched)
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
    """First-level sub-folders: the classes of a folder-per-class layout. Hidden and linked
    folders, and names that are not UTF-8, are left out, as scan() leaves them out."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ImportFailed(f"{_shown(folder)} is not a folder")
    return sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not p.is_symlink()
        and not _undecodable(p.name)
    )
