"""Training rounds in the admin area: 'Retrain now', the progress fragment, the history."""

from __future__ import annotations

import io
import json

from flask import (
    Blueprint,
    Response,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

import strategies

from .. import store
from ..dataset import csv_writer
from ..jobs import runner
from ..jobs.queue import enqueue
from ..store import job_rows
from ..store import rounds as round_store
from .auth import login_required
from .context import get_db, get_project, get_tasks
from .htmx import is_htmx

bp = Blueprint("rounds", __name__, url_prefix="/admin/rounds")


def status_context() -> dict:
    db = get_db()
    return {
        **runner.status(db, runner.ROUND),
        "serving": round_store.serving_round(db),  # whose ranking the queue follows
        "strategies": [(n, strategies.describe(n)) for n in strategies.names()],
        "default_strategy": get_project().config.strategy,
        # Below two labeled classes a round is a cold start: it prepares the queue.
        "cold_start": round_store.trained_class_count(db) < 2,
    }


@bp.get("/status")
@login_required("admin")
def status():
    return render_template("_round_status.html", **status_context())


@bp.post("/")
@login_required("admin")
def retrain():
    name = request.form.get("strategy", get_project().config.strategy)
    if name not in strategies.names():
        abort(400, f"Unknown strategy {name[:40]!r}; known: {', '.join(strategies.names())}.")
    enqueue(get_project(), get_tasks(), runner.ROUND.name, current_user.id, strategy=name)
    if is_htmx():
        return render_template("_round_status.html", **status_context())
    return redirect(url_for("rounds.history"))


def learning_curve(rounds: list[dict]) -> list[dict]:
    """Points (labels used, estimated accuracy) of finished rounds, oldest first, scaled
    into a 0..1 box for the SVG plot."""
    done = [r for r in reversed(rounds) if r["status"] == "done" and r["accuracy"] is not None]
    if not done:
        return []
    most = max(r["labels_used"] for r in done) or 1
    return [
        {"x": r["labels_used"] / most, "y": r["accuracy"], "labels": r["labels_used"],
         "accuracy": r["accuracy"], "id": r["id"]}
        for r in done
    ]


def finishing(rounds: list[dict], total: int) -> dict | None:
    """The latest finished round's split of the images (people, model, left, what the
    model could label now) and the projected human labels until it can label the rest."""
    from ..autolabel.projection import labels_to_finish

    done = [r for r in reversed(rounds) if r["status"] == "done" and r["auto_ready"] is not None]
    if not done:
        return None
    latest = done[-1]
    points = [(r["labels_used"], r["pool_size"] - r["auto_ready"]) for r in done]
    return {"round": latest, "left": latest["pool_size"], "ready": latest["auto_ready"],
            "target": latest["auto_ready_target"], "model": latest["auto_labels"] or 0,
            "people": latest["labels_used"], "more": labels_to_finish(points, total)}


@bp.get("/")
@login_required("admin")
def history():
    db = get_db()
    rows = job_rows.history(db, runner.ROUND.table, limit=200)
    for row in rows:
        row["per_class_parsed"] = json.loads(row["per_class"]) if row["per_class"] else {}
    return render_template(
        "rounds.html", rounds=rows, curve=learning_curve(rows),
        finish=finishing(rows, store.image_count(db)), **status_context()
    )


@bp.get("/latest.json")
@login_required("admin")
def latest_json():
    """The newest round as JSON (for scripts such as `activelabel simulate`)."""
    return jsonify(job_rows.latest(get_db(), runner.ROUND.table) or {})


@bp.get("/<int:round_id>/predictions.csv")
@login_required("admin")
def predictions_csv(round_id: int):
    if job_rows.get(get_db(), runner.ROUND.table, round_id) is None:
        abort(404, f"No round {round_id}.")
    rows = round_store.round_predictions(get_db(), round_id)
    buffer = io.StringIO()
    writer = csv_writer.DictWriter(
        buffer, fieldnames=["image_id", "file", "predicted", "confidence", "score", "rank"]
    )
    writer.writeheader()
    writer.writerows(rows)
    return Response(
        buffer.getvalue(), mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="round-{round_id}.csv"'},
    )
