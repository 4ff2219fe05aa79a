"""The `activelabel` command."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from sqlite_utils import Database

from .. import store
from ..config import Project, ProjectError
from ..dataset.importer import ImportFailed, ImportReport
from ..store import ROLES
from .autolabel import autolabel
from .export import export
from .quality import audit
from .rounds import (
    backbones_cmd,
    retrain,
    run_round_here,
    strategies_cmd,
    summary_text,
    worker,
)
from .simulate import simulate

DEMO_USERS = (("admin", "admin"), ("annotator", "annotator"))


class _Errors(click.Group):
    """Turn the errors meant for people into a clean message and exit status 1. OSError is
    one of them: a full disk, a port in use or a folder without permission is the person's
    to fix, and its message says what it is. Paths are not checked by click (exists=True)
    for the same reason: a missing folder is reported by the code that needs it, with
    status 1, not as a usage error (status 2)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ProjectError, store.StoreError, ImportFailed, ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Errors)
@click.version_option(package_name="activelabel")
def main() -> None:
    """activelabel: label image folders with annotators in the browser."""
    from ..projects import PRIVATE_UMASK

    # Whatever this process writes (databases, exports, caches; the server and worker it
    # starts inherit it) is the owner's alone: the project holds password hashes.
    os.umask(PRIVATE_UMASK)


def _progress_import(run, label: str) -> ImportReport:
    """Run an import with a progress bar on stderr, shown once the number of files is known."""
    with contextlib.ExitStack() as stack:
        bars = []

        def on_start(total: int) -> None:
            # sys.stderr as it is now (click's test runner swaps it); click 8.5 deprecates
            # click.get_text_stream.
            bar = click.progressbar(length=total, label=label, file=sys.stderr)
            bars.append(stack.enter_context(bar))

        return run(progress=lambda n: bars[0].update(n), on_start=on_start)


@contextlib.contextmanager
def _open_db(project: Project) -> Iterator[Database]:
    from ..projects import open_db

    db = open_db(project)
    try:
        yield db
    finally:
        db.conn.close()


def _print_report(report: ImportReport, limit: int = 20) -> None:
    click.echo(report.summary())
    for line in report.understood_lines():
        click.echo(f"  {line}")
    for warning in report.warnings:
        click.echo(f"Warning: {warning}")
    for issue in report.issues[:limit]:
        click.echo(f"  {issue['kind']}: {issue['path']}: {issue['reason']}")
    if len(report.issues) > limit:
        click.echo(f"  ... and {len(report.issues) - limit} more (see the admin page)")


def _layout_options(command):
    """The options that say how a folder's images are read, on init and import alike."""
    for option in reversed((
        click.option("--unlabeled-folder", "unlabeled_folders", multiple=True, metavar="NAME",
                     help="A first-level folder of unlabeled images, as pool, unlabeled,"
                          " unsorted, todo and new are (repeatable)."),
        click.option("--labels", default=None, metavar="FILE",
                     help="A label file for the images: CSV with a file,label header, or"
                          " JSONL; paths relative to the image folder."),
        click.option("--add-classes", is_flag=True,
                     help="Add the classes the label file names that the project lacks"
                          " (else they are an error)."),
    )):
        command = option(command)
    return command


@main.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--images", "images", required=True, type=click.Path(file_okay=False),
              help="Folder of images to import (sub-folders named like classes give labels).")
@click.option("--classes", default=None,
              help="Comma-separated class names (only those folders are classes); default:"
                   " the image folder's class folders.")
@click.option("--seed", default=0, show_default=True, help="Seeds the queue order and splits.")
@click.option("--votes-per-image", default=1, show_default=True, help="Votes each image needs.")
@_layout_options
def init(project: str, images: str, classes: str | None, seed: int, votes_per_image: int,
         unlabeled_folders: tuple[str, ...], labels: str | None, add_classes: bool) -> None:
    """Create a project folder from a folder of images."""
    from ..projects import init_project

    names = classes.split(",") if classes else None
    created: dict = {}

    def run(progress, on_start):
        created["project"], report = init_project(
            project, images, names, seed=seed, votes_per_image=votes_per_image,
            progress=progress, on_start=on_start, labels=labels, add_classes=add_classes,
            unlabeled_folders=unlabeled_folders,
        )
        return report

    report = _progress_import(run, "Importing")
    click.echo(f"Created project {created['project'].root}")
    _print_report(report)
    click.echo(f"Next: activelabel user add {project} NAME --role admin")


@main.command(name="import")
@click.argument("project", type=click.Path(file_okay=False))
@click.argument("folder", type=click.Path(file_okay=False))
@_layout_options
def import_cmd(project: str, folder: str, unlabeled_folders: tuple[str, ...],
               labels: str | None, add_classes: bool) -> None:
    """Add the images of FOLDER to a project (same content twice gives one image, and an
    image already answered keeps its answers)."""
    from ..projects import import_images

    opened = Project.open(project)

    def run(progress, on_start):
        return import_images(opened, folder, progress=progress, on_start=on_start,
                             labels=labels, add_classes=add_classes,
                             unlabeled_folders=unlabeled_folders)

    report = _progress_import(run, "Importing")
    _print_report(report)


@main.group()
def user() -> None:
    """Manage users."""


@user.command(name="add")
@click.argument("project", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="annotator", show_default=True,
              help="Admins see the admin page and export; annotators label.")
@click.option("--password", default=None, help="Set this password instead of generating one.")
def user_add(project: str, name: str, role: str, password: str | None) -> None:
    """Add a user and print their password."""
    from ..projects import add_user

    secret = add_user(Project.open(project), name, role, password)
    click.echo(f"Added {role} {name.strip()}; password: {secret}")


@user.command(name="list")
@click.argument("project", type=click.Path(file_okay=False))
def user_list(project: str) -> None:
    """List users and roles."""
    with _open_db(Project.open(project)) as db:
        users = store.list_users(db)
    for row in users:
        click.echo(f"{row['name']}\t{row['role']}" + ("" if row["active"] else "\tdeactivated"))


@user.command(name="passwd")
@click.argument("project", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--generate", is_flag=True, help="Generate a password and print it.")
def user_passwd(project: str, name: str, generate: bool) -> None:
    """Set a user's password (asked for twice, or generated); every session of theirs
    ends."""
    from ..projects import reset_password

    opened = Project.open(project)
    with _open_db(opened) as db:
        if store.get_user_by_name(db, name) is None:
            raise click.ClickException(f"no active user named {name.strip()!r}")
    typed = None if generate else click.prompt(
        "New password", hide_input=True, confirmation_prompt=True)
    secret = reset_password(opened, name, typed)
    click.echo(f"New password for {name.strip()}" + (f": {secret}" if generate else "")
               + "; their sessions are ended.")


def _set_active(project: str, name: str, active: bool) -> None:
    with _open_db(Project.open(project)) as db:
        row = store.find_user(db, name)
        if row is None:
            raise click.ClickException(f"no user named {name.strip()!r}")
        store.set_active(db, row["id"], active)
    click.echo(f"{row['name']} is " + ("active." if active
                                        else "deactivated, and logged out everywhere."))


@user.command(name="deactivate")
@click.argument("project", type=click.Path(file_okay=False))
@click.argument("name")
def user_deactivate(project: str, name: str) -> None:
    """Stop a user from logging in; ends their sessions and gives back their images. Their
    answers stay."""
    _set_active(project, name, False)


@user.command(name="activate")
@click.argument("project", type=click.Path(file_okay=False))
@click.argument("name")
def user_activate(project: str, name: str) -> None:
    """Let a deactivated user log in again."""
    _set_active(project, name, True)


@main.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--add", "add", multiple=True, help="Add a class (repeatable).")
def classes(project: str, add: tuple[str, ...]) -> None:
    """List the classes, or add new ones."""
    with _open_db(Project.open(project)) as db:
        rows = store.add_classes(db, add) if add else store.classes(db)
    for row in rows:
        click.echo(row["name"])


@main.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, help="Request threads (waitress).")
@click.option("--debug", is_flag=True, help="Flask's development server with the debugger.")
@click.option("--no-worker", is_flag=True,
              help="Do not start a round worker (run `activelabel worker` elsewhere).")
def serve(project: str, host: str, port: int, threads: int, debug: bool, no_worker: bool) -> None:
    """Serve a project with a production WSGI server (waitress) and a round worker."""
    _serve(Path(project), host, port, threads, debug, worker=not no_worker)


def _serve(project: Path, host: str, port: int, threads: int, debug: bool,
           worker: bool = True) -> None:
    from ..app import create_app
    from ..jobs.workers import start_worker_process, stop_on_sigterm

    app = create_app(project)
    stop_on_sigterm()
    process = start_worker_process(project) if worker else None
    click.echo(f"Serving {project.resolve()} at http://{host}:{port}/  (Ctrl-C stops)")
    try:
        if debug:
            app.run(host=host, port=port, debug=True, use_reloader=False)
            return
        import waitress

        waitress.serve(app, host=host, port=port, threads=threads)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


@main.command()
@click.argument("folder", default="activelabel-demo", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 lets other machines connect.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535),
              help="TCP port to listen on.")
@click.option("--no-serve", is_flag=True, help="Build the project and print logins, then stop.")
def demo(folder: str, host: str, port: int, no_serve: bool) -> None:
    """Build a demo project from scikit-learn's handwritten digits and serve it."""
    from ..dataset.demo import write_digits

    root = Path(folder).expanduser().resolve()
    images = root.parent / f"{root.name}-images"
    if (root / "activelabel.toml").exists():
        opened = Project.open(root)
        click.echo(f"Using the existing demo project {root}")
    else:
        count = write_digits(images, root.parent / f"{root.name}-oracle.csv")
        click.echo(f"Wrote {count} digit images to {images}")
        opened, report = _init_with_bar(root, images)
        _print_report(report)
        # The first cards come from a cold start (no labels yet: the most typical image of
        # each cluster), not from the import's shuffle.
        click.echo("Choosing the first images to label (a cold-start round):")
        round_id, summary = run_round_here(opened, opened.config.strategy)
        click.echo(summary_text(round_id, opened.config.strategy, summary))
    logins = [(name, role, _demo_login(opened, name, role)) for name, role in DEMO_USERS]
    click.echo("Log in with:")
    for name, role, password in logins:
        click.echo(f"  {role:<10} user {name!r:<12} password {password}")
    if not no_serve:
        _serve(root, host, port, 8, False)


def _demo_login(project: Project, name: str, role: str) -> str:
    """A fresh password for a demo user, adding the user if a run stopped before it was."""
    from ..projects import add_user, reset_password

    with _open_db(project) as db:
        exists = store.get_user_by_name(db, name) is not None
    return reset_password(project, name) if exists else add_user(project, name, role)


def _init_with_bar(root: Path, images: Path):
    from ..projects import init_project

    created: dict = {}

    def run(progress, on_start):
        created["project"], report = init_project(
            root, images, [str(d) for d in range(10)], progress=progress, on_start=on_start
        )
        return report

    report = _progress_import(run, "Importing")
    return created["project"], report


# The commands defined in the other modules of this folder.
for command in (worker, retrain, strategies_cmd, backbones_cmd, simulate, audit, autolabel,
                export):
    main.add_command(command)
