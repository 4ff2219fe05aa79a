"""`activelabel autolabel`: the model labels the images it is sure of, from the shell."""

from __future__ import annotations

import json

import click

from ..config import Project


@click.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--precision", default=0.98, show_default=True, type=float,
              help="Target precision of what the model labels, between 0.5 and 1 (e.g. 0.98).")
@click.option("--finish", default=None, type=float,
              help="Finish the dataset instead: label every unanswered image at once, if the"
                   " round can measure every class it predicts and this share of all the"
                   " dataset's labels is then expected right (people's labels counted"
                   " right), e.g. 0.97; else say what is missing.")
@click.option("--classes", default=None,
              help="Comma-separated class names to auto-label; default: every class.")
@click.option("--dry-run", is_flag=True,
              help="Print what would be labeled, per class, and write nothing.")
@click.option("--withdraw", is_flag=True,
              help="Retract the model's labels (of --classes, or all) instead: those images"
                   " go back to the queue.")
@click.option("--margin", default=0.02, show_default=True, type=float,
              help="The spot check is sized for this half-width of its 90 % interval.")
@click.option("--margin-of", type=click.Choice(["labels", "dataset"]), default="labels",
              show_default=True,
              help="What --margin is of: the auto-labels' accuracy, or the whole dataset's share"
                   " right (a smaller sample; a finishing run always measures the dataset).")
@click.option("--no-spot-check", is_flag=True,
              help="Send no sample of the new auto-labels to people.")
@click.option("--report", is_flag=True,
              help="Print what the latest run's spot check has measured, and write nothing.")
def autolabel(project: str, precision: float, finish: float | None, classes: str | None,
              dry_run: bool, withdraw: bool, margin: float, margin_of: str,
              no_spot_check: bool, report: bool) -> None:
    """Label the pool images the latest round is sure of, so that what it labels is right
    at the target precision: one threshold per class, chosen on the round's held-out
    predictions of the consensus labels. The labels are answers from source 'model': they
    never outvote a person, a person's vote supersedes them, they train nothing and are
    not exported by default. A seeded random sample of them (the spot check) goes to the
    front of the annotators' queue, the model's answer hidden; --report prints what their
    answers measure. --finish asks for the whole dataset's share right instead, and labels
    everything left or nothing."""
    from ..autolabel.run import AutoLabelError, preview
    from ..jobs.autolabel import run
    from ..jobs.runner import AUTOLABEL
    from ..projects import open_db
    from ..store import auto_labels, job_rows

    given = click.get_current_context().get_parameter_source("precision")
    if finish is not None and given == click.core.ParameterSource.COMMANDLINE:
        raise click.ClickException("--finish and --precision are two targets: --finish asks for"
                                   " the whole dataset's share right, --precision for the model's"
                                   " labels'. Give one; nothing written.")
    if not no_spot_check and not 0 < margin < 0.5:
        raise click.ClickException(f"--margin is a half-width between 0 and 0.5 (got"
                                   f" {margin:g}); e.g. 0.02 for ±2 points")
    names = [n.strip() for n in classes.split(",") if n.strip()] if classes else None
    opened = Project.open(project)
    db = open_db(opened)
    try:
        if withdraw:
            _withdraw(db, names)
            return
        if report:
            _print_report(db, project)
            return
        target = precision if finish is None else finish
        try:
            made = preview(db, target, names, finish=finish is not None)
        except AutoLabelError as exc:
            raise click.ClickException(str(exc)) from None
        _print_preview(made)
        if dry_run:
            click.echo("Nothing written (--dry-run).")
            return
        if not made.plan.count:
            click.echo("Nothing to label at this target: nothing written.")
            return
        run_id, created = job_rows.queue(
            db, AUTOLABEL.table, None, target=target, finish=int(finish is not None),
            margin_of_dataset=int(margin_of == "dataset"),
            classes=json.dumps(names) if names else None,
            margin=None if no_spot_check else margin)
        if not created:
            raise click.ClickException(f"auto-label run {run_id} is already queued or running")
    finally:
        db.conn.close()
    try:
        done = run(opened, run_id)
    except AutoLabelError as exc:
        raise click.ClickException(str(exc)) from None
    db = open_db(opened)
    try:
        counts = auto_labels.auto_label_counts(db)
        click.echo(f"{done['labeled']} images labeled by the model (run {run_id});"
                   f" {sum(counts.values())} in all now. `activelabel autolabel {project}"
                   " --withdraw` takes them back.")
        if done["spot_checked"]:
            click.echo(f"Spot check: {done['spot_checked']} of them, drawn at random, go to the"
                       " front of the annotators' queue with the model's answer hidden;"
                       f" `activelabel autolabel {project} --report` shows what they measure.")
    finally:
        db.conn.close()


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_preview(made) -> None:
    round_row, target, finish = made.round, made.plan.target, made.plan.finish
    click.echo(f"Round {round_row['id']} ({round_row['labels_used']} labels): " + (
        f"finishing the dataset at {target:.1%} of its labels right" if finish else
        f"auto-labels at a target precision of {target:.1%}"))
    click.echo(f"{'class':<12} {'labels':>6} {'threshold':>9} {'to label':>8} {'expected':>8}"
               f" {'held-out':>15}")
    for one in made.plan.classes:
        name = made.names.get(one.class_id, str(one.class_id))
        if one.threshold is None:
            click.echo(f"{name:<12} {one.labels:>6} {'-':>9} {0:>8}  none: {one.reason}")
            continue
        held = f"{_percent(one.held_out_precision)} of {one.held_out_count}"
        click.echo(f"{name:<12} {one.labels:>6} {one.threshold:>9.3f} {one.count:>8}"
                   f" {_percent(one.expected):>8} {held:>15}")
    click.echo(f"In all: {made.plan.count} images would be labeled, expected precision"
               f" {_percent(made.plan.expected)} (the calibrated confidence of what is"
               " labeled); 'held-out': how often the round's held-out predictions above the"
               " threshold were right. Both are measured on the labeled images: where the"
               " unlabeled ones differ from them, the real precision can be lower.")
    if finish:
        click.echo(f"The dataset: {finish.images} images; about {finish.errors_before:.0f}"
                   f" wrong expected among the auto-labels standing and"
                   f" {finish.errors_new:.0f} among these, {finish.allowed:.0f} allowed:"
                   f" {finish.expected:.1%} of its labels expected right (people's counted"
                   " right).")
    for note in made.notes:
        click.echo(f"Note: {note}")


def _withdraw(db, names: list[str] | None) -> None:
    from .. import store
    from ..autolabel.run import AutoLabelError, class_ids_named
    from ..store import auto_labels

    try:
        class_ids = class_ids_named({c["id"]: c["name"] for c in store.classes(db)},
                                    names) if names else None
    except AutoLabelError as exc:
        raise click.ClickException(str(exc)) from None
    withdrawn = auto_labels.withdraw(db, class_ids)
    click.echo(f"Withdrew {withdrawn} auto-labels; those images are back in the queue.")


def _print_report(db, project: str) -> None:
    from .. import store
    from ..autolabel.run import report

    found = report(db)
    if found is None:
        click.echo("No auto-labels yet.")
        return
    run, names = found["run"], {c["id"]: c["name"] for c in store.classes(db)}
    click.echo(f"Run {run['id']} (round {run['round_id']}, target {run['target']:.1%}):"
               f" {run['labeled']} auto-labels; {sum(found['standing'].values())} stand now")
    click.echo(f"{'class':<12} {'checked':>12} {'right':>6} {'accuracy':>9} {'90% interval':>15}"
               f" {'expected':>9}")
    for row in found["measured"]:
        name = "all" if row["class_id"] is None else names.get(row["class_id"], "?")
        checked = f"{row['checked']} of {row['sampled']}"
        span = f"{row['low']:.1%}-{row['high']:.1%}" if row["checked"] else "-"
        flag = "  below the target" if row["below_target"] else ""
        click.echo(f"{name:<12} {checked:>12} {row['right']:>6} {_percent(row['accuracy']):>9}"
                   f" {span:>15} {_percent(row['expected']):>9}{flag}")
    dataset = found["dataset"]
    if dataset:
        click.echo(f"The dataset ({dataset['images']} images, {dataset['auto']} labeled by the"
                   f" model alone): {dataset['accuracy']:.1%} of its labels right"
                   f" ({dataset['low']:.1%}-{dataset['high']:.1%}), people's labels counted"
                   " right" + (f"; asked {dataset['target']:.1%}" if dataset["target"] else "")
                   + ("  below the target" if dataset["below_target"] else ""))
    low = [names.get(r["class_id"], "?") for r in found["measured"]
           if r["below_target"] and r["class_id"] is not None]
    if low:
        click.echo(f"Measured below the target: {', '.join(low)}. `activelabel autolabel"
                   f" {project} --withdraw --classes {','.join(low)}` takes their"
                   " auto-labels back.")
