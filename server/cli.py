"""The `activelabel` command."""

from __future__ import annotations

from pathlib import Path

import click

from . import store
from .config import Project, ProjectError
from .importer import ImportFailed, ImportReport
from .store import ROLES

DEMO_USERS = (("admin", "admin"), ("annotator", "annotator"))


class _Errors(click.Group):
    """Turn the errors meant for people into a clean message and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ProjectError, store.StoreError, ImportFailed, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Errors)
@click.version_option(package_name="activelabel")
def main() -> None:
    """activelabel: label image folders with annotators in the browser."""


def _progress_import(run, label: str) -> ImportReport:
    """Run an import with a progress bar on stderr."""
    state: dict = {}

    def on_start(total: int) -> None:
        state["bar"] = click.progressbar(length=total, label=label, file=click.get_text_stream("stderr"))
        state["bar"].__enter__()

    try:
        return run(progress=lambda n: state["bar"].update(n), on_start=on_start)
    finally:
        if "bar" in state:
            state["bar"].__exit__(None, None, None)


def _print_report(report: ImportReport, limit: int = 20) -> None:
    click.echo(report.summary())
    for issue in report.issues[:limit]:
        click.echo(f"  {issue['kind']}: {issue['path']}: {issue['reason']}")
    if len(report.issues) > limit:
        click.echo(f"  ... and {len(report.issues) - limit} more (see the admin page)")


@main.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--images", "images", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of images to import (sub-folders named like classes give labels).")
@click.option("--classes", default=None,
              help="Comma-separated class names; default: the image folder's sub-folders.")
@click.option("--seed", default=0, show_default=True, help="Seeds the queue order and splits.")
@click.option("--votes-per-image", default=1, show_default=True, help="Votes each image needs.")
def init(project: str, images: str, classes: str | None, seed: int, votes_per_image: int) -> None:
    """Create a project folder from a folder of images."""
    from .projects import init_project

    names = [c for c in classes.split(",")] if classes else None
    created: dict = {}

    def run(progress, on_start):
        created["project"], report = init_project(
            project, images, names, seed=seed, votes_per_image=votes_per_image,
            progress=progress, on_start=on_start,
        )
        return report

    report = _progress_import(run, "Importing")
    click.echo(f"Created project {created['project'].root}")
    _print_report(report)
    click.echo(f"Next: activelabel user add {project} NAME --role admin")


@main.command(name="import")
@click.argument("project", type=click.Path(exists=True, file_okay=False))
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
def import_cmd(project: str, folder: str) -> None:
    """Add the images of FOLDER to a project (same content twice gives one image)."""
    from .projects import import_images

    opened = Project.open(project)
    report = _progress_import(
        lambda progress, on_start: import_images(opened, folder, progress=progress, on_start=on_start),
        "Importing",
    )
    _print_report(report)


@main.group()
def user() -> None:
    """Manage users."""


@user.command(name="add")
@click.argument("project", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="annotator", show_default=True)
@click.option("--password", default=None, help="Set this password instead of generating one.")
def user_add(project: str, name: str, role: str, password: str | None) -> None:
    """Add a user and print their password."""
    from .projects import add_user

    secret = add_user(Project.open(project), name, role, password)
    click.echo(f"Added {role} {name.strip()}; password: {secret}")


@user.command(name="list")
@click.argument("project", type=click.Path(exists=True, file_okay=False))
def user_list(project: str) -> None:
    """List users and roles."""
    db = store.connect(Project.open(project).db_path)
    for row in store.list_users(db):
        click.echo(f"{row['name']}\t{row['role']}")


@main.command()
@click.argument("project", type=click.Path(exists=True, file_okay=False))
@click.option("--add", "add", multiple=True, help="Add a class (repeatable).")
def classes(project: str, add: tuple[str, ...]) -> None:
    """List the classes, or add new ones."""
    db = store.connect(Project.open(project).db_path)
    rows = store.add_classes(db, add) if add else store.classes(db)
    for row in rows:
        click.echo(row["name"])


@main.command()
@click.argument("project", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["imagefolder", "csv", "jsonl"]),
              default="imagefolder", show_default=True)
@click.option("--split", default="0.8,0.1,0.1", show_default=True, help="train,val,test")
@click.option("--seed", type=int, default=None, help="Default: the project's seed.")
def export(project: str, out: str, fmt: str, split: str, seed: int | None) -> None:
    """Export labeled images: imagefolder (a folder, or a .zip), csv or jsonl."""
    from . import exporter

    opened = Project.open(project)
    fractions = exporter.parse_split(split)
    rows = exporter.assign_splits(
        store.labeled_images(store.connect(opened.db_path)), fractions,
        opened.config.seed if seed is None else seed,
    )
    path = exporter.write_export(rows, fmt, Path(out))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["split"]] = counts.get(row["split"], 0) + 1
    click.echo(f"Wrote {len(rows)} labeled images to {path} ("
               + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")")


@main.command()
@click.argument("project", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--threads", default=8, show_default=True, help="Request threads (waitress).")
@click.option("--debug", is_flag=True, help="Flask's development server with the debugger.")
def serve(project: str, host: str, port: int, threads: int, debug: bool) -> None:
    """Serve a project with a production WSGI server (waitress)."""
    _serve(Path(project), host, port, threads, debug)


def _serve(project: Path, host: str, port: int, threads: int, debug: bool) -> None:
    from .app import create_app

    app = create_app(project)
    click.echo(f"Serving {project.resolve()} at http://{host}:{port}/  (Ctrl-C stops)")
    if debug:
        app.run(host=host, port=port, debug=True, use_reloader=False)
        return
    import waitress

    waitress.serve(app, host=host, port=port, threads=threads, ident="activelabel")


@main.command()
@click.argument("folder", default="activelabel-demo", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--no-serve", is_flag=True, help="Build the project and print logins, then stop.")
def demo(folder: str, host: str, port: int, no_serve: bool) -> None:
    """Build a demo project from scikit-learn's handwritten digits and serve it."""
    from .demo import write_digits
    from .projects import add_user, init_project, reset_password

    root = Path(folder).expanduser().resolve()
    images = root.parent / f"{root.name}-images"
    if (root / "activelabel.toml").exists():
        opened = Project.open(root)
        click.echo(f"Using the existing demo project {root}")
        logins = [(name, role, reset_password(opened, name)) for name, role in DEMO_USERS]
    else:
        count = write_digits(images, root.parent / f"{root.name}-oracle.csv")
        click.echo(f"Wrote {count} digit images to {images}")
        opened, report = _init_with_bar(root, images)
        _print_report(report)
        logins = [(name, role, add_user(opened, name, role)) for name, role in DEMO_USERS]
    click.echo("Log in with:")
    for name, role, password in logins:
        click.echo(f"  {role:<10} user {name!r:<12} password {password}")
    if not no_serve:
        _serve(root, host, port, 8, False)


def _init_with_bar(root: Path, images: Path):
    from .projects import init_project

    created: dict = {}

    def run(progress, on_start):
        created["project"], report = init_project(
            root, images, [str(d) for d in range(10)], progress=progress, on_start=on_start
        )
        return report

    report = _progress_import(run, "Importing")
    return created["project"], report
