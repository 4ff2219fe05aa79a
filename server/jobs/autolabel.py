"""An auto-label run, start to end: plan the thresholds on the serving round's held-out
predictions (autolabel/run.py), append the labels, send the spot check's sample to people,
and record what it did. Runs as a job (the worker), or in the shell (`activelabel
autolabel`); its life around this is runner.py's. No Flask here."""

from __future__ import annotations

import json

from ..config import Project
from ..store import auto_labels, job_rows
from .runner import AUTOLABEL, Progress, run_job

STAGES = {"plan": (0.0, 0.2), "label": (0.2, 0.9), "spot check": (0.9, 1.0)}


def run(project: Project, job_id: int, started: bool = False) -> dict:
    return run_job(project, AUTOLABEL, job_id, STAGES,
                   lambda db, progress: _label(db, project, job_id, progress), started)


def _label(db, project: Project, run_id: int, progress: Progress) -> dict:
    from ..autolabel.run import apply, preview

    row = job_rows.get(db, AUTOLABEL.table, run_id)
    classes = json.loads(row["classes"]) if row["classes"] else None
    finish = bool(row["finish"])
    progress.stage("plan")(0.0, f"planning to finish the dataset at {row['target']:.1%} right"
                           if finish else f"planning at a target precision of {row['target']:.1%}")
    made = preview(db, row["target"], classes, finish=finish)
    progress.stage("label")(0.0, f"labeling {made.plan.count} images")
    done = apply(db, made, run_id, margin=row["margin"], seed=project.config.seed,
                 of_dataset=bool(row["margin_of_dataset"]))
    message = (f"{done.written} images labeled by the model from round {made.round['id']};"
               f" {done.spot_checked} sent to people as the spot check" if done.written else
               "nothing to label at this target")
    planned = made.as_dict()
    auto_labels.finish_run(db, run_id, made.round["id"], planned, done.written,
                           done.spot_checked, message)
    return {"labeled": done.written, "spot_checked": done.spot_checked,
            "round_id": made.round["id"], "plan": planned, "message": message}
