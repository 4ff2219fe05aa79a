"""The auto-label page (admin): preview what the model would label at a target precision,
or to finish the dataset at a share of all its labels right (per class: threshold, images,
the calibration and held-out estimates), start the
auto-label run (a job; the page polls it), see what the spot checks have measured of every
auto-label standing, and withdraw a class's auto-labels in one step."""

from __future__ import annotations

import json

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import store
from ..autolabel.plan import PlanError, check_target
from ..autolabel.run import AutoLabelError, class_ids_named, preview, report
from ..autolabel.spot_check import MARGIN
from ..jobs import runner
from ..jobs.queue import enqueue
from ..store import auto_labels
from . import htmx
from .auth import login_required
from .context import get_db, get_project, get_tasks

bp = Blueprint("autolabel", __name__, url_prefix="/admin/autolabel")

DEFAULT_TARGET = 0.98


def _status_context() -> dict:
    return runner.status(get_db(), runner.AUTOLABEL)


def _target(raw: str | None) -> float:
    """The target precision, typed as 0.98 or 98 (%); 400 with the reason when bad."""
    try:
        value = float((raw or "").strip() or DEFAULT_TARGET)
    except ValueError:
        abort(400, f"Target precision {raw[:20]!r} is not a number: type e.g. 0.98 or 98.")
    value = value / 100 if value > 1 else value
    try:
        return check_target(value)
    except PlanError as exc:
        abort(400, f"{exc}. Nothing was written.")


def _margin(raw: str | None) -> float | None:
    """The spot check's margin in points (2 = ±2 points); 0 for no spot check."""
    try:
        points = float((raw or "").strip() or MARGIN * 100)
    except ValueError:
        abort(400, f"Spot-check margin {raw[:20]!r} is not a number of points: e.g. 2.")
    if points == 0:
        return None
    if not 0 < points < 50:
        abort(400, "A spot-check margin is between 0 and 50 points (0: no spot check).")
    return points / 100


def _margin_of(values) -> str:
    """What the spot check's margin is of: 'labels' (the auto-labels' accuracy, the
    default) or 'dataset' (the whole dataset's share right)."""
    return htmx.one_of(values.get("margin_of"), ("labels", "dataset"), "The margin's scope")


def _finish(values) -> bool:
    """Whether the form asks to finish the dataset (mode=finish) rather than to label what
    the model is sure of (mode=sure, the default)."""
    return htmx.one_of(values.get("mode"), ("sure", "finish"), "The mode") == "finish"


def _classes(db) -> list[str] | None:
    """The classes ticked (none ticked: every class); 400 naming an unknown one."""
    names = [n for n in request.values.getlist("classes") if n.strip()]
    try:
        class_ids_named({c["id"]: c["name"] for c in store.classes(db)}, names)
    except AutoLabelError as exc:
        abort(400, f"{str(exc).capitalize()}. Nothing was written.")
    return names or None


@bp.get("/")
@login_required("admin")
def index():
    db = get_db()
    previewed, problem = None, None
    target, finish = DEFAULT_TARGET, _finish(request.args)
    if "target" in request.args:  # the Preview button
        target = _target(request.args.get("target"))
        try:
            previewed = preview(db, target, _classes(db), finish=finish)
        except AutoLabelError as exc:
            problem = str(exc)
    names = {c["id"]: c["name"] for c in store.classes(db)}
    return render_template(
        "autolabel.html", preview=previewed, problem=problem, target=target, names=names,
        finish=finish,
        chosen=set(request.args.getlist("classes")), margin=request.args.get("margin", "2"),
        margin_of=_margin_of(request.args),
        found=report(db), **_status_context())


@bp.get("/status")
@login_required("admin")
def status():
    return render_template("_autolabel_status.html", **_status_context())


@bp.post("/run")
@login_required("admin")
def run():
    """Start an auto-label run at the form's target: the job plans again when it runs (on
    the round serving then) and fails with the reason if the round went stale."""
    db = get_db()
    target, names = _target(request.form.get("target")), _classes(db)
    enqueue(get_project(), get_tasks(), runner.AUTOLABEL.name, current_user.id,
            target=target, finish=int(_finish(request.form)),
            margin_of_dataset=int(_margin_of(request.form) == "dataset"),
            classes=json.dumps(names) if names else None,
            margin=_margin(request.form.get("margin")))
    if htmx.is_htmx():
        return render_template("_autolabel_status.html", **_status_context())
    return redirect(url_for("autolabel.index"))


@bp.post("/withdraw")
@login_required("admin")
def withdraw():
    """Retract the auto-labels of one class (class_id), or all of them: appended
    retractions; the images go back to the queue."""
    db = get_db()
    raw = request.form.get("class_id", "")
    class_id = htmx.row_id(raw)
    if raw and (class_id is None or store.class_by_id(db, class_id) is None):
        abort(400, f"No class with id {raw[:20]!r}. Nothing was withdrawn.")
    gone = auto_labels.withdraw(db, [class_id] if class_id else None, user_id=current_user.id,
                                source="web")
    what = f"class {store.class_by_id(db, class_id)['name']!r}" if class_id else "every class"
    flash(f"Withdrew {gone} auto-labels of {what}; those images are back in the queue.", "info")
    return redirect(url_for("autolabel.index") + "#measured")
