"""Project-level actions shared by the CLI and the demo: create, import, add users."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from . import store
from .config import CONFIG_NAME, DB_NAME, SECRET_NAME, Project, ProjectConfig, ProjectError
from .dataset.importer import ImportFailed, ImportReport, class_folders, import_folder
from .dataset.label_file import LabelFile, read_label_file, unknown_classes
from .dataset.layout import folded, shown
from .passwords import generate_password, hash_password

Progress = Callable[[int], None]


PRIVATE_UMASK = 0o077  # what a project's processes write: files 0600, folders 0700


def keep_private(project: Project) -> None:
    """The project holds password hashes and session rows: its folder and the files at its
    top (databases, their WAL files, the session key) are the owner's alone, whatever the
    umask was when they were made. A folder of 0700 also closes everything under it."""
    names = [CONFIG_NAME, SECRET_NAME, "cache", "exports"] + [
        db + suffix for db in (DB_NAME, "jobs.db") for suffix in ("", "-wal", "-shm")]
    for path in [project.root, *(project.root / name for name in names)]:
        if path.is_symlink() or not path.exists():
            continue
        mode = 0o700 if path.is_dir() else 0o600
        if path.stat().st_mode & 0o777 != mode:
            try:
                path.chmod(mode)
            except PermissionError:
                pass  # another user's file in the folder: theirs to fix


def open_db(project: Project, migrate: bool = True):
    """The project's database with its consensus rules brought in line with its settings:
    how every process that judges votes (server, worker, CLI) opens a project."""
    db = store.connect(project.db_path, migrate=migrate)
    keep_private(project)
    try:
        store.set_rules(db, store.Rules.of(project.config))
    except BaseException:
        db.conn.close()
        raise
    return db


def init_project(
    folder: str | Path,
    images: str | Path,
    classes: list[str] | None = None,
    *,
    seed: int = 0,
    votes_per_image: int = 1,
    progress: Progress | None = None,
    on_start: Callable[[int], None] | None = None,
    labels: str | Path | None = None,
    add_classes: bool = False,
    unlabeled_folders: Iterable[str] = (),
    **settings,
) -> tuple[Project, ImportReport]:
    """Create a project from an image folder. Classes come from `classes` (then only those
    folders are classes), or else from the folder's layout (`dataset.layout`: one sub-folder
    per class, pools of unlabeled and maybe folders left out) and the label file's labels.
    `settings` are further ProjectConfig fields (qa_fraction=0.0, say). Everything is checked
    before the project folder is made."""
    images = Path(images).expanduser().resolve()
    if not images.is_dir():  # before anything is created
        raise ImportFailed(f"{images} is not a folder")
    unlabeled_folders = list(unlabeled_folders)
    if classes and (both := [n for n in classes if n.strip().casefold()
                             in folded(unlabeled_folders)]):
        raise ProjectError(f"{', '.join(both)}: a class and an --unlabeled-folder at once")
    label_file = read_label_file(labels, images) if labels is not None else None
    if classes:
        names = list(classes)
        if label_file is not None:
            names += unknown_classes(label_file, {n.strip() for n in names}, add_classes)
    else:
        names = class_folders(images, unlabeled_folders)
        names += [n for n in (label_file.classes if label_file else []) if n not in names]
    if not names:
        raise ProjectError(
            f"no classes: pass --classes a,b,c or arrange {images} as one sub-folder per class"
        )
    root = Path(folder).expanduser().resolve()
    # The project's cache and exports would otherwise be imported with the images next time.
    if root.is_relative_to(images):
        raise ProjectError("put the project folder outside the image folder")
    config = ProjectConfig(
        name=root.name, images=str(images), seed=seed, votes_per_image=votes_per_image,
        **settings,
    )
    config.validate()
    names = [store.check_class_name(n) for n in names]  # before anything is written
    if len(set(names)) != len(names):
        raise store.StoreError("class names must be unique")
    project = Project.create(root, config)
    db = open_db(project)
    try:
        store.add_classes(db, names)
        report = _import(project, db, images, label_file, add_classes, unlabeled_folders,
                         progress, on_start)
    finally:
        db.conn.close()
    return project, report


def import_images(
    project: Project,
    images: str | Path,
    *,
    progress: Progress | None = None,
    on_start: Callable[[int], None] | None = None,
    labels: str | Path | None = None,
    add_classes: bool = False,
    unlabeled_folders: Iterable[str] = (),
    db=None,
) -> ImportReport:
    """Add a folder's images to a project; `labels` is a label file (CSV or JSONL) for them,
    checked whole before anything is written."""
    label_file = None
    if labels is not None:  # its paths are relative to the folder: that must exist first
        root = Path(images).expanduser().resolve()
        if not root.is_dir():
            raise ImportFailed(f"{shown(images)} is not a folder")
        label_file = read_label_file(labels, root)
    own = db is None
    db = db or open_db(project)
    try:
        return _import(project, db, images, label_file, add_classes, unlabeled_folders,
                       progress, on_start)
    finally:
        if own:
            db.conn.close()


def _import(project: Project, db, images, label_file: LabelFile | None, add_classes: bool,
            unlabeled_folders, progress, on_start) -> ImportReport:
    return import_folder(
        db,
        images,
        seed=project.config.seed,
        votes_needed=project.config.votes_per_image,
        max_pixels=project.config.max_pixels,
        progress=progress,
        on_start=on_start,
        labels=label_file,
        add_classes=add_classes,
        unlabeled_folders=unlabeled_folders,
    )


def add_user(project: Project, name: str, role: str, password: str | None = None) -> str:
    """Add a user; returns the password (generated when none is given)."""
    password = password or generate_password()
    db = store.connect(project.db_path)
    try:
        store.add_user(db, name, role, hash_password(password))
    finally:
        db.conn.close()
    return password


def reset_password(project: Project, name: str, password: str | None = None) -> str:
    password = password or generate_password()
    db = store.connect(project.db_path)
    try:
        user = store.get_user_by_name(db, name)
        if user is None:
            raise store.StoreError(f"no user named {name!r}")
        store.set_password(db, user["id"], hash_password(password))
    finally:
        db.conn.close()
    return password
