"""The agreement page: how far annotators agree (Fleiss' kappa, Krippendorff's alpha, Cohen's
kappa per pair), each annotator's estimated accuracy, a between-annotator confusion matrix,
and the review queue's size."""

from __future__ import annotations

import io

import numpy as np
from flask import Blueprint, Response, flash, redirect, render_template, url_for

from .. import annotators
from .auth import login_required
from .context import get_db

bp = Blueprint("agreement", __name__, url_prefix="/admin/agreement")


@bp.get("/")
@login_required("admin")
def index():
    report = annotators.agreement_report(get_db())
    return render_template("agreement.html", report=report)


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
    report = annotators.agreement_report(get_db())
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
    return Response(buffer.getvalue(), mimetype="image/png",
                    headers={"Cache-Control": "no-store"})
