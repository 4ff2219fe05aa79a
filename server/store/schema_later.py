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
    # Each time the model labeled images: the round, the target, the plan it followed
    # (per class: threshold, counts, estimates) as JSON, and how many it wrote.
    db["auto_label_runs"].create(
        {"id": int, "round_id": int, "created_at": str, "requested_by": int, "target": float,
         "plan": str, "labeled": int},
        pk="id", not_null={"round_id", "created_at", "target", "plan"},
        foreign_keys=[("round_id", "rounds", "id"), ("requested_by", "users", "id")],
    )
    # Beside each 'auto' annotation (the model's answer, source 'model'): its run, round and
    # calibrated confidence. Append-only, as the annotations are.
    db["auto_answers"].create(
        {"annotation_id": int, "run_id": int, "round_id": int, "image_id": int,
         "confidence": float},
        pk="annotation_id", not_null={"run_id", "round_id", "image_id", "confidence"},
        foreign_keys=[("annotation_id", "annotations", "id"),
                      ("run_id", "auto_label_runs", "id"), ("round_id", "rounds", "id")],
    )
    db["auto_answers"].create_index(["image_id", "round_id"])
    db["auto_answers"].create_index(["run_id"])
    for action in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER auto_answers_no_{action.lower()} BEFORE {action} ON auto_answers"
            " BEGIN SELECT RAISE(ABORT, 'auto answers are append-only'); END"
        )
