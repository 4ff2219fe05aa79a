"""The schema's migrations from m010 on, registered on schema.py's `migrations` after its
own (schema.py imports this module at its end), so they apply in their numbers' order.
Never edit one once released: add the next."""

from __future__ import annotations

from sqlite_utils import Database

from .schema import migrations


@migrations()
def m010_auto_labels(db: Database) -> None:
    # A round's held-out predictions of its consensus labels (each from a model that did
    # not see it, its confidence calibrated): what auto-label thresholds are chosen on.
    db.execute(
        "CREATE TABLE held_out (round_id INTEGER NOT NULL REFERENCES rounds(id),"
        " image_id INTEGER NOT NULL, given_id INTEGER NOT NULL, class_id INTEGER NOT NULL,"
        " confidence REAL NOT NULL, PRIMARY KEY (round_id, image_id)) WITHOUT ROWID"
    )
    # Each pool image predicted by those held-out models too (their mean, calibrated): what
    # the model labels an image with, so that thresholds chosen on held_out apply.
    db["predictions"].add_column("held_out_class_id", int)
    db["predictions"].add_column("held_out_confidence", float)
    # Per round, for the learning curve: the images labeled by the model alone when it
    # published, and how many of its pool its held-out models could label at a target
    # (the latest auto-label run's, else 0.98), with that target.
    db["rounds"].add_column("auto_labels", int)
    db["rounds"].add_column("auto_ready", int)
    db["rounds"].add_column("auto_ready_target", float)
    # Auto-label runs, each a job (job_rows.py) like a round: what was asked (the target,
    # the classes as JSON, null for all; the spot check's margin, null for none) and what it
    # did (the round whose predictions it labeled, the plan per class as JSON, the labels
    # written, the images sent to the spot check).
    db["auto_label_runs"].create(
        {"id": int, "status": str, "requested_by": int, "created_at": str, "started_at": str,
         "finished_at": str, "heartbeat": float, "progress": float, "message": str,
         "error": str, "target": float, "classes": str, "margin": float, "round_id": int,
         "plan": str, "labeled": int, "spot_checked": int},
        pk="id", not_null={"status", "created_at", "target"},
        foreign_keys=[("round_id", "rounds", "id"), ("requested_by", "users", "id")],
    )
    db["auto_label_runs"].create_index(["status"])
    # Beside each 'auto' annotation (the model's answer, source 'model'): its run, round and
    # calibrated confidence. Append-only, as the annotations are.
    db["auto_answers"].create(
        {"annotation_id": int, "run_id": int, "round_id": int, "image_id": int,
         "confidence": float},
        pk="annotation_id", not_null={"run_id", "round_id", "image_id", "confidence"},
        foreign_keys=[("annotation_id", "annotations", "id"),
                      ("run_id", "auto_label_runs", "id"), ("round_id", "rounds", "id")],
    )
    # The spot check of a run: a random sample of its auto-labels, handed to people blind
    # (the card shows no prediction) until someone answers; their answers measure the run.
    db["spot_checks"].create(
        {"run_id": int, "image_id": int, "annotation_id": int, "created_at": str},
        pk=("run_id", "image_id"), not_null={"annotation_id", "created_at"},
        foreign_keys=[("run_id", "auto_label_runs", "id"), ("image_id", "images", "id"),
                      ("annotation_id", "annotations", "id")],
    )
    db["spot_checks"].create_index(["image_id"])
    db["auto_answers"].create_index(["image_id", "round_id"])
    db["auto_answers"].create_index(["run_id"])
    for action in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER auto_answers_no_{action.lower()} BEFORE {action} ON auto_answers"
            " BEGIN SELECT RAISE(ABORT, 'auto answers are append-only'); END"
        )


@migrations()
def m011_finishing_runs(db: Database) -> None:
    # An auto-label run that finishes the dataset: its target is the share of the whole
    # dataset's labels right, and it labels every pool image it can measure, or nothing.
    db["auto_label_runs"].add_column("finish", int, not_null_default=0)
    # Whether the spot check's margin is of the dataset's share right rather than of the
    # auto-labels' (always for a finishing run).
    db["auto_label_runs"].add_column("margin_of_dataset", int, not_null_default=0)
