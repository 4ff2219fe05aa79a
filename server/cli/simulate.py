"""`activelabel simulate`: simulated annotators label a copy of a project through the running
product."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import Project


@click.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--oracle", required=True, type=click.Path(dir_okay=False),
              help="CSV with columns file,label: the true labels the annotators answer with.")
@click.option("--budget", default=200, show_default=True,
              help="Images to label in all. Each is answered by every simulated annotator, so"
                   " the votes given are the budget times the number of --annotators.")
@click.option("--batch", default=20, show_default=True, help="Images labeled between retrains.")
@click.option("--strategy", default="margin,random", show_default=True,
              help="Strategy, or several separated by commas to compare.")
@click.option("--test", "test_csv", default=None, type=click.Path(dir_okay=False),
              help="CSV (file,label) of held-out test images; default: a seeded 30 %"
                   " of the oracle.")
@click.option("--out", default="simulation", show_default=True, type=click.Path(file_okay=False),
              help="Folder for learning_curve.csv/.png, consensus.csv, annotators.csv and the"
                   " simulated projects.")
@click.option("--annotators", "annotators_text", default=None, metavar="ACCURACIES",
              help="Simulated annotators, one accuracy each (e.g. 0.95,0.85,0.70): each logs"
                   " in on its own (ann1, ann2, ...) and answers every image, wrongly (another"
                   " class, drawn uniformly and seeded by the project's seed) with probability"
                   " 1 - accuracy. The copy then needs one vote from each per image. Default:"
                   " one annotator who is always right.")
@click.option("--mode", "mode_text", default="single", show_default=True,
              help="How the annotator labels: single (one image per key), grid (grid"
                   " verify after each round: accept a page of one predicted class, toggling"
                   " the wrong ones) or cluster (the cluster bootstrap: label whole clusters,"
                   " toggling the odd ones out); several separated by commas to compare."
                   " Every key press and click is counted; grid and cluster take one"
                   " annotator.")
@click.option("--clusters", default=None, type=click.IntRange(1, 100_000),
              help="Clusters for --mode cluster; default: the silhouette's suggestion.")
def simulate(project: str, oracle: str, budget: int, batch: int, strategy: str,
             test_csv: str | None, out: str, annotators_text: str | None, mode_text: str,
             clusters: int | None) -> None:
    """Simulated annotators label a copy of PROJECT through the running product (its web
    server and worker), retraining every batch; writes the learning curve on held-out
    images as CSV and PNG, and how often the images' consensus equals the oracle
    (consensus.csv, where a disputed image counts as wrong: it has no label; and each
    simulated annotator's votes in annotators.csv). With --mode grid or cluster it labels
    through grid verify or the cluster bootstrap and prints the labels per 100 actions (key
    presses and clicks). PROJECT itself is not changed."""
    import strategies

    from ..simulation.annotators import consensus_report, parse_accuracies, write_reports
    from ..simulation.bulk import MODES
    from ..simulation.live_server import SimulationError, stopping_on_sigterm
    from ..simulation.plan import make_plan, plan_truth_by_id, read_labels_csv
    from ..simulation.simulate import run_simulation, write_curves

    names = list(dict.fromkeys(s.strip() for s in strategy.split(",") if s.strip()))
    if not names:
        raise click.ClickException(
            f"--strategy names no strategy; known: {', '.join(strategies.names())}")
    unknown = [n for n in names if n not in strategies.names()]
    if unknown:
        raise click.ClickException(
            f"unknown strategy {', '.join(map(repr, unknown))}; known strategies: "
            + ", ".join(strategies.names()))
    modes = list(dict.fromkeys(m.strip() for m in mode_text.split(",") if m.strip()))
    strange = [m for m in modes if m not in MODES]
    if not modes or strange:
        raise click.ClickException(f"unknown --mode {', '.join(map(repr, strange or ['']))};"
                                   f" use {', '.join(MODES)}")
    if budget < 1 or batch < 1:
        raise click.ClickException("--budget and --batch must be positive")
    try:
        accuracies = [1.0] if annotators_text is None else parse_accuracies(annotators_text)
    except ValueError as exc:
        raise click.ClickException(f"--annotators: {exc}") from exc
    if len(accuracies) > 1 and modes != ["single"]:
        raise click.ClickException("--mode grid and cluster simulate one annotator: give"
                                   " --annotators one accuracy, or use --mode single")
    out_dir = Path(out).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise click.ClickException(f"{out_dir} is a file; --out needs a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise click.ClickException(f"{out_dir} is not empty; choose another --out")
    source = Project.open(project)
    if out_dir.is_relative_to(source.root):
        raise click.ClickException("put --out outside the project folder")
    try:
        truth = read_labels_csv(Path(oracle))
        test = read_labels_csv(Path(test_csv)) if test_csv else None
        plan = make_plan(source, truth, test)
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from exc
    for note in plan.notes:
        click.echo(f"Note: {note}")
    click.echo(f"{plan.images} images: {plan.trainable} can be labeled, {len(plan.test)} are"
               " held out for testing" + (f" ({Path(test_csv).name})" if test_csv else
                                            " (30 % of the oracle, seeded)"))
    if budget > plan.trainable:
        click.echo(f"Note: --budget {budget} is more than the {plan.trainable} images that"
                   " can be labeled; the curve stops there")
    several = len(accuracies) > 1
    if several:
        click.echo(f"{len(accuracies)} simulated annotators (accuracy"
                   f" {', '.join(f'{a:g}' for a in accuracies)}): every image gets"
                   f" {len(accuracies)} votes; --budget {budget} counts images, so up to"
                   f" {budget * len(accuracies)} votes")
    curves, copies, reports = [], [], []
    title = f"{source.config.name}: batch {batch}, {len(plan.test)} held-out images"
    if several:
        title += f", annotators {','.join(f'{a:g}' for a in accuracies)}"
    xlabel = f"images labeled ({len(accuracies)} votes each)" if several else "labels given"

    def write_all():
        paths = write_curves(curves, out_dir, title, xlabel)
        return paths + write_reports(reports, out_dir)

    try:
        with stopping_on_sigterm():
            for name in names:
                for mode in modes:
                    curve, copy = run_simulation(source, plan, name, budget, batch, out_dir,
                                                 embedding_sources=copies, log=click.echo,
                                                 accuracies=accuracies, mode=mode,
                                                 clusters=clusters)
                    curves.append(curve)
                    copies.append(copy)
                    report = consensus_report(copy, plan_truth_by_id(copy, plan), curve.name,
                                              accuracies)
                    reports.append(report)
                    for line in report.lines():
                        click.echo(line)
        written = write_all()
    except SimulationError as exc:
        if curves:
            write_all()
        raise click.ClickException(str(exc)) from exc
    for curve, report in zip(curves, reports, strict=True):
        final = (f"{curve.points[-1].accuracy:.3f} at {curve.points[-1].labels} labels"
                 if curve.points else "n/a (no round trained)")
        click.echo(f"{curve.name}: final test accuracy {final}")
        accuracy = "n/a" if report.accuracy is None else f"{report.accuracy:.3f}"
        click.echo(f"{curve.name}: consensus accuracy {accuracy} over {report.images}"
                   f" images ({report.disputed} disputed, {report.votes} votes)")
        tally = curve.tally
        if tally.actions:
            right = ("n/a" if report.final_accuracy is None
                     else f"{report.final_accuracy:.1%}")
            click.echo(f"{curve.name}: {tally.labels} labels in {tally.actions} actions:"
                       f" {tally.per_100():.1f} labels per 100 actions ({tally.per_100(True):.1f}"
                       f" keyboard only; {tally.pages} pages, {tally.mixed} clusters mixed,"
                       f" {tally.one_by_one} one by one); {right} of the labels are right")
    click.echo("Wrote " + ", ".join(str(path) for path in written))
