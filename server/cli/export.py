"""`activelabel export`: the labeled images to a folder, a zip, CSV or JSONL."""

from __future__ import annotations

from pathlib import Path

import click

from .. import store
from ..config import Project


@click.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path())
# Format and seed are plain text checked by the exporter, not click types, so a mistake gets
# the same message as on the web, and exit status 1 like every other bad request.
@click.option("--format", "fmt", default="imagefolder", show_default=True,
              help="imagefolder, csv or jsonl.")
@click.option("--split", default="0.8,0.1,0.1", show_default=True,
              help="train,val,test fractions, or keep: each image's imported split")
@click.option("--seed", default=None, help="Default: the project's seed.")
@click.option("--drop-duplicates", is_flag=True,
              help="Leave out extra copies of near-duplicate groups (see the quality page).")
@click.option("--labels", default=None,
              help="human (people's labels) or all (the model's auto-labels too). Default:"
                   " human, or all with export.export_model_labels.")
def export(project: str, out: str, fmt: str, split: str, seed: str | None,
           drop_duplicates: bool, labels: str | None) -> None:
    """Export the consensus labels (agreed or adjudicated), and with --labels all the
    model's auto-labels: imagefolder (a folder, or a .zip, with LABELS.md saying where the
    labels came from and DISPUTED.csv listing images still disputed), csv or jsonl."""
    from ..dataset import exporter

    opened = Project.open(project)
    chosen = exporter.parse_format(fmt)
    fractions = exporter.parse_split(split)
    seed_value = exporter.parse_seed(seed, opened.config.seed)
    chosen_labels = exporter.parse_labels(
        labels, "all" if opened.config.export_model_labels else "human")
    from ..dataset.selection import export_rows
    from ..projects import open_db

    db = open_db(opened)
    try:
        rows, left_out = export_rows(db, fractions, seed_value, drop_duplicates,
                                     chosen_labels)
        disputed = store.disputed_images(db)
    finally:
        db.conn.close()
    problems = exporter.write_export(rows, chosen, Path(out), disputed)
    counts = {name: sum(1 for r in rows if r["split"] == name) for name in exporter.SPLIT_NAMES}
    click.echo(f"Wrote {len(rows) - len(problems)} labeled images to {out} ("
               + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + ")")
    model = sum(1 for r in rows if r.get("source") == "model")
    if model:
        click.echo(f"{model} of them labeled by the model (source 'model' in labels.csv)")
    if left_out:
        click.echo(f"Left out {left_out} extra copies of near-duplicate images")
    if disputed:
        click.echo(f"{len(disputed)} disputed images are not exported; they wait for review"
                   + (f" (listed in {exporter.DISPUTED_NAME})" if chosen.name == "imagefolder"
                      else ""))
    if problems:
        click.echo(f"Left out {len(problems)} images whose file is missing, unreadable or"
                   f" changed; they are listed in {exporter.MISSING_NAME}", err=True)
