"""The agreement page: how far annotators agree (Fleiss' kappa, Krippendorff's alpha, Cohen's
kappa per pair), each annotator's estimated accuracy, a between-annotator confusion matrix,
and the review queue's size."""

from __future__ import annotations

import io
import threading

import numpy as np
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from .. import annotators, store
from ..store import audit_actions
from . import audit_steps, htmx
from .auth import login_required
from .context import get_db

bp = Blueprint("agreement", __name__, url_prefix="/admin/agreement")


class ReportCache:
    """The agreement report and its chart, kept for one answers_version: recomputing kappa,
    alpha and the confusion matrix over every vote on each visit costs seconds on a large
    project, and they only change when an answer (or the model, a class, a user) does."""

    def __init__(self):
        self._lock = threading.RLock()  # the chart asks for the report inside its own get
        self._version = None
        self._values: dict[str, object] = {}
        self.computed = 0  # reports computed, for the tests

    def get(self, db, name: str, make):
        version = store.answers_version(db)
        with self._lock:  # one computation at a time; the waiters take its result
            if version != self._version:
                self._version, self._values = version, {}
            if name not in self._values:
                self._values[name] = make()
                if name == "report":
                    self.computed += 1
            return self._values[name]


def _cache() -> ReportCache:
    return current_app.extensions.setdefault("agreement_cache", ReportCache())


def _report():
    db = get_db()
    return _cache().get(db, "report", lambda: annotators.agreement_report(db))


@bp.get("/")
@login_required("admin")
def index():
    last = audit_actions.last_review_action(get_db(), current_user.id)
    return render_template("agreement.html", report=_report(), undoable=last)


def _form_id(name: str) -> int:
    value = htmx.row_id(request.form.get(name))
    if value is None:
        abort(400, f"Missing or malformed {name}: expected an id. Nothing was sent to review.")
    return value


@bp.post("/confused/review")
@login_required("admin")
def review_confused():
    """Send one annotator's answers on the pair of classes they confuse (B given for
    consensus A) to review, in one undoable step. The images are looked up again here, not
    taken from the page: answers given since it was drawn are sent too."""
    db = get_db()
    user_id, true_id, answered_id = (_form_id(n) for n in ("user_id", "true_id", "answered_id"))
    user = store.get_user(db, user_id)
    classes = {c["id"]: c["name"] for c in store.classes(db)}
    if user is None or true_id not in classes or answered_id not in classes:
        abort(400, "Unknown annotator or class: reload the page. Nothing was sent to review.")
    images = audit_actions.answers_on_pair(db, user_id, true_id, answered_id)
    if not images:
        flash(f"{user['name']} has no answers left where they said {classes[answered_id]}"
              f" and the consensus is {classes[true_id]}.", "error")
        return redirect(url_for("agreement.index"))
    done = audit_actions.send_to_review(db, current_user.id, images)
    flash(f"Sent {done['sent']} of {user['name']}'s answers \"{classes[answered_id]}\" on"
          f" {classes[true_id]} images to review"
          + (f" ({done['already']} were already waiting there)" if done["already"] else "")
          + ". Undo takes it back as one.", "ok")
    return redirect(url_for("agreement.index"))


@bp.post("/confused/undo")
@login_required("admin")
def undo_confused():
    audit_steps.undo_latest(get_db(), current_user.id)
    return redirect(url_for("agreement.index"))


@bp.post("/refit")
@login_required("admin")
def refit():
    """Refit the annotator model now (each round does it too) and re-judge multi-vote images."""
    model = annotators.fit_annotator_model(get_db())
    if model is None:
        flash("Annotator quality needs votes from at least two people.", "error")
    elif model["trusted"]:
        flash("Annotator model refitted; consensus now weighs each vote by its annotator.", "ok")
    else:
        flash("Annotator model refitted; too little overlap yet to weigh votes, so consensus "
              "stays the plain majority.", "ok")
    return redirect(url_for("agreement.index"))


@bp.get("/confusion.png")
@login_required("admin")
def confusion_png():
    """Between-annotator confusion: how often one annotator's class meets another's on the
    same image, over all pairs of annotators."""
    png = _cache().get(get_db(), "png", lambda: _confusion_png(_report()))
    return Response(png, mimetype="image/png", headers={"Cache-Control": "no-store"})


def _confusion_png(report) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = [c["name"] for c in report.classes]
    figure = Figure(figsize=(1.2 + 0.45 * len(names), 1.0 + 0.45 * len(names)), dpi=100)
    axes = figure.add_subplot()
    if report.confusion is None:
        axes.text(0.5, 0.5, "no image has two votes yet", ha="center", va="center")
        axes.set_axis_off()
    else:
        matrix = report.confusion
        axes.imshow(matrix, cmap="Blues")
        axes.set_xticks(range(len(names)), names, rotation=90)
        axes.set_yticks(range(len(names)), names)
        axes.set_xlabel("another annotator said")
        axes.set_ylabel("one annotator said")
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                axes.text(j, i, str(int(value)), ha="center", va="center", fontsize=7,
                          color="white" if value > matrix.max() / 2 else "black")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
