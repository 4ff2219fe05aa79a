"""`activelabel audit`: the quality checks from the shell."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import Project


@click.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Where to write the suspects CSV. Default: PROJECT/exports/suspects.csv.")
@click.option("--target", default=None, type=float,
              help="A target accuracy (e.g. 90): print the labels predicted to reach it.")
def audit(project: str, out: str | None, target: float | None) -> None:
    """Run the quality checks now: rank suspected mislabels (CSV, most suspicious first),
    list groups of same-looking images filed under the wrong class, find near-duplicate
    groups, fit the sample-size curve, and list annotators who confuse
    two classes. Same as the quality page's button (and the agreement page's list), run in
    this process; the pages show the findings too."""
    from ..jobs import quality as checks
    from ..jobs.runner import QUALITY
    from ..projects import open_db
    from ..store import job_rows

    opened = Project.open(project)
    db = open_db(opened)
    try:
        run_id, created = job_rows.queue(db, QUALITY.table, None)
        if not created:
            raise click.ClickException(f"quality run {run_id} is already queued or running")
    finally:
        db.conn.close()
    with click.progressbar(length=100, label=f"Quality run {run_id}") as bar:
        result = checks.run_quality(opened, run_id)
        bar.update(100)
    db = open_db(opened)
    try:
        suspects = result["suspects"]
        target_path = Path(out) if out else opened.exports_dir / "suspects.csv"
        if "rows" in suspects:
            target_path.parent.mkdir(parents=True, exist_ok=True)
            target_path.write_text(checks.suspects_csv(db, suspects), encoding="utf-8")
            click.echo(f"{suspects['count']} consensus labels ranked ({suspects['ranking']});"
                       f" cleanlab flags {suspects['flagged']}; CSV: {target_path}")
            _misfiled_groups(db, suspects.get("groups") or [])
        else:
            click.echo(f"Suspected mislabels: skipped, {suspects['skipped']}")
        groups = result["duplicates"]["groups"]
        click.echo(f"{len(groups)} near-duplicate groups"
                   f" ({sum(len(g) for g in groups)} images)")
        curve = result["curve"]
        if "params" in curve:
            fitted = checks.curve_from_dict(curve)
            click.echo(f"Learning curve ({fitted.model}) on {curve['labels']} labels: ceiling"
                       f" about {fitted.asymptote:.1%}")
            if target is not None:
                goal = target / 100 if target > 1 else target
                needed = fitted.labels_needed(goal)
                click.echo(f"For {goal:.1%}: " + (f"about {needed:,} labels" if needed else
                                                  "not reachable with more labels like these"))
        else:
            click.echo(f"Learning curve: skipped, {curve['skipped']}")
        for warning in checks.balance(db).warnings:
            click.echo(f"Balance: {warning}")
        _confused_annotators(db)
    finally:
        db.conn.close()


def _misfiled_groups(db, groups: list[dict]) -> None:
    """One line per group of same-looking images filed under a class they do not look like."""
    from ..store import classes

    names = {c["id"]: c["name"] for c in classes(db)}
    if not groups:
        click.echo("Groups filed under the wrong class: none")
    for group in groups:
        click.echo(f"Group: {len(group['image_ids'])} images filed as"
                   f" {names.get(group['given'])!r} look like {names.get(group['looks_like'])!r}"
                   f" (ids {', '.join(map(str, group['image_ids'][:8]))}"
                   f"{', ...' if len(group['image_ids']) > 8 else ''}); the quality page sends"
                   " them to review")


def _confused_annotators(db) -> None:
    """Refit the annotator model (as a round does) and print who confuses which classes."""
    from ..annotators import confused_answers, fit_annotator_model
    from ..store import list_users

    model = fit_annotator_model(db)
    if model is None:
        click.echo("Annotators who confuse two classes: needs votes from two people")
        return
    names = {str(u["id"]): u["name"] for u in list_users(db)}
    rows = confused_answers(db, model, names)
    if not rows:
        click.echo("Annotators who confuse two classes: none")
    for row in rows:
        click.echo(f"Annotator {row['name']} answers {row['answered']!r} for {row['true']!r}:"
                   f" {row['rate']:.0%} of the time (others {row['others']:.0%}),"
                   f" {row['count']} answers now; the agreement page sends them to review")
