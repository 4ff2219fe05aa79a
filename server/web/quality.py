"""The quality page (admin): groups of same-looking images filed under the wrong class (one
key sends a whole group to review, undoable), suspected mislabels (one key sends one to
review), groups of near-duplicates with keep/drop, the sample-size curve with a prediction
for a target accuracy, and class balance. The checks run as a job; the page polls its progress."""

from __future__ import annotations

import io

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import store
from ..jobs import quality as audit
from ..jobs import runner
from ..jobs.queue import enqueue
from ..store import audit_actions
from ..store import quality as quality_store
from . import audit_steps, htmx
from .auth import login_required
from .context import get_db, get_project, get_tasks

bp = Blueprint("quality", __name__, url_prefix="/admin/quality")

PAGE = 50


def _status_context() -> dict:
    return runner.status(get_db(), runner.QUALITY)


def _target(raw: str | None) -> float | None:
    """The admin's target accuracy, typed as 90 or 0.9; None when absent; 400 when bad."""
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        abort(400, f"Target accuracy {raw[:20]!r} is not a number: type e.g. 90 or 0.9.")
    value = value / 100 if value > 1 else value
    if not 0 < value < 1:
        abort(400, "A target accuracy is between 0 and 100 %.")
    return value


@bp.get("/")
@login_required("admin")
def index():
    db = get_db()
    done = quality_store.latest_findings(db)
    result = done["result"] if done else None
    page = max(0, request.args.get("page", 0, type=int))
    names = {c["id"]: c["name"] for c in store.classes(db)}
    suspects = []
    if result and result["suspects"].get("rows"):
        states = {}
        for row in result["suspects"]["rows"][page * PAGE:(page + 1) * PAGE]:
            state = states.setdefault(row["image_id"], store.state_of(db, row["image_id"]))
            votes = [v for v in store.image_votes(db, row["image_id"])
                     if v["kind"] in ("label", "adjudicate") and not v["undone"]]
            suspects.append({**row, "given_name": names.get(row["given"]),
                             "suggested_name": names.get(row["suggested"]),
                             "status": state["status"] if state else None, "votes": votes})
    target = _target(request.args.get("target"))
    prediction = None
    if target is not None and result and "params" in result["curve"]:
        fitted = audit.curve_from_dict(result["curve"])
        prediction = {"target": target, "labels": fitted.labels_needed(target),
                      "range": fitted.labels_needed_range(target)}
    dropped = quality_store.dropped_images(db)
    decided = quality_store.decided_images(db)
    return render_template(
        "quality.html", run=done, result=result, suspects=suspects, page=page, per_page=PAGE,
        prediction=prediction, target=target, dropped=dropped, decided=decided,
        groups=_groups(db, result, names),
        undoable=audit_actions.last_review_action(db, current_user.id),
        balance=audit.balance(db), **_status_context())


GROUP_THUMBS = 24


def _groups(db, result: dict | None, names: dict) -> list[dict]:
    """The latest run's misfiled groups, each with its class names, the first thumbnails and
    how many of its images are waiting for review now."""
    groups = (result or {}).get("suspects", {}).get("groups") or []
    return [{**g, "index": i, "given_name": names.get(g["given"]),
             "looks_like_name": names.get(g["looks_like"]), "count": len(g["image_ids"]),
             "thumbs": g["image_ids"][:GROUP_THUMBS],
             "waiting": len(audit_actions.waiting_for_review(db, g["image_ids"]))}
            for i, g in enumerate(groups)]


@bp.post("/groups/review")
@login_required("admin")
def review_group():
    """Send every image of one misfiled group to review, in one undoable step. The group is
    read from the stored findings of the run named in the form (not from the page's list):
    a newer run since the page was drawn is a 409, and nothing is sent."""
    db = get_db()
    run_id = htmx.row_id(request.form.get("run_id"))
    index = request.form.get("group", "")
    done = quality_store.latest_findings(db)
    if run_id is None or not (index.isascii() and index.isdigit()):
        abort(400, "Missing or malformed run_id or group. Nothing was sent to review.")
    if done is None or done["id"] != run_id:
        abort(409, "The quality findings changed since this page was drawn: reload it."
                   " Nothing was sent to review.")
    groups = done["result"]["suspects"].get("groups") or []
    if int(index) >= len(groups):
        abort(400, f"Run {run_id} has no group {index}. Nothing was sent to review.")
    group = groups[int(index)]
    names = {c["id"]: c["name"] for c in store.classes(db)}
    sent = audit_actions.send_to_review(db, current_user.id, group["image_ids"])
    flash(f"Sent {sent['sent']} images filed as {names.get(group['given'])} that look like"
          f" {names.get(group['looks_like'])} to review"
          + (f" ({sent['already']} were already waiting there)" if sent["already"] else "")
          + ". Undo takes it back as one.", "ok")
    return redirect(url_for("quality.index") + "#groups")


@bp.post("/groups/undo")
@login_required("admin")
def undo_group():
    audit_steps.undo_latest(get_db(), current_user.id)
    return redirect(url_for("quality.index") + "#groups")


@bp.get("/status")
@login_required("admin")
def status():
    return render_template("_quality_status.html", **_status_context())


@bp.post("/run")
@login_required("admin")
def run():
    enqueue(get_project(), get_tasks(), runner.QUALITY.name, current_user.id)
    return render_template("_quality_status.html", **_status_context())


@bp.post("/duplicates/<int:image_id>")
@login_required("admin")
def decide(image_id: int):
    keep = request.form.get("keep")
    if keep not in ("0", "1"):
        abort(400, "Say keep=1 or keep=0.")
    try:
        quality_store.decide_duplicate(get_db(), current_user.id, image_id, keep == "1")
    except store.StoreError as exc:
        abort(404, f"{exc}. Nothing was saved.")
    return render_template("_duplicate_choice.html", image_id=image_id, kept=keep == "1")


@bp.get("/suspects.csv")
@login_required("admin")
def suspects_csv():
    db = get_db()
    done = quality_store.latest_findings(db)
    if not done:
        abort(404, "No quality run has finished yet.")
    return Response(audit.suspects_csv(db, done["result"]["suspects"]), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="suspects.csv"'})


@bp.get("/curve.png")
@login_required("admin")
def curve_png():
    """Accuracy against labels: the measured points, the fitted curve, its 90 % band."""
    db = get_db()
    done = quality_store.latest_findings(db)
    if not done or "params" not in done["result"]["curve"]:
        abort(404, "No sample-size curve yet: run the quality checks with enough labels.")
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    fitted = audit.curve_from_dict(done["result"]["curve"])
    have = done["result"]["curve"]["labels"]
    xs = np.unique(np.geomspace(10, max(have * 20, 100), 200).astype(int))
    low, high = fitted.band(xs)
    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    axes = figure.add_subplot()
    axes.fill_between(xs, low, high, alpha=0.25, label="90 % band")
    axes.plot(xs, fitted.predict(xs), label=f"fit ({fitted.model})")
    for point in fitted.points:
        axes.errorbar(point.labels, point.mean, yerr=point.sd, fmt="o", color="black")
    axes.axvline(have, linestyle=":", color="grey", label=f"now: {have} labels")
    axes.set_xscale("log")
    axes.set_xlabel("consensus labels")
    axes.set_ylabel("accuracy (cross-validated)")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return Response(buffer.getvalue(), mimetype="image/png", headers={"Cache-Control": "no-store"})
