"""Review: a reviewer (or an admin) settles disputed images. Every vote is shown with who
gave it; the reviewer's label is final and recorded as an 'adjudicate' annotation."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_login import current_user

from .. import store
from ..store.rounds import latest_prediction
from . import htmx
from .annotate import keyed_classes
from .auth import _safe_next, login_required
from .context import get_db

bp = Blueprint("review", __name__, url_prefix="/review")

REVIEWERS = ("admin", "reviewer")


def _card(image_id: int | None, status: int = 200):
    db = get_db()
    upcoming = store.review_queue(db, limit=2)
    if image_id is None and upcoming:
        image_id = upcoming[0]
    prefetch = next((i for i in upcoming if i != image_id), None)
    state = store.state_of(db, image_id) if image_id is not None else None
    if image_id is not None and state is None:
        abort(404, f"No image with id {image_id}.")
    votes = store.image_votes(db, image_id) if image_id is not None else []
    classes = {c["id"]: c["name"] for c in store.classes(db)}
    context = {
        "image_id": image_id,
        "prefetch_id": prefetch,
        "state": state,
        "consensus": classes.get(state["class_id"]) if state else None,
        "votes": votes,
        "gold": store.gold_answers(db).get(image_id) if image_id is not None else None,
        "classes": keyed_classes(store.classes(db)),
        "class_names": classes,
        "left": store.review_count(db),
        "suggestion": latest_prediction(db, image_id) if image_id is not None else None,
    }
    return htmx.fragment_or_page("_review_card.html", "review.html", **context), status


@bp.get("/")
@login_required(*REVIEWERS)
def index():
    """The next disputed image."""
    return _card(None)


@bp.get("/<int:image_id>")
@login_required(*REVIEWERS)
def show(image_id: int):
    """Any image, disputed or not: a reviewer may settle or correct any label."""
    if not store.is_row_id(image_id):
        abort(404, f"No image with id {image_id}.")
    return _card(image_id)


def _class_id(raw: str) -> int:
    class_id = htmx.row_id(raw)
    if class_id is None:
        abort(400, "Missing or malformed answer: expected a class id.")
    if store.class_by_id(get_db(), class_id) is None:
        abort(400, f"Unknown class id {raw[:20]}. Reload the page: the classes may have changed.")
    return class_id


@bp.post("/<int:image_id>")
@login_required(*REVIEWERS)
def decide(image_id: int):
    """The final label for this image (the id in the URL is the image the page showed).
    `gold` also records it as a gold image, against which annotators are measured."""
    class_id = _class_id(request.form.get("choice", ""))
    try:
        store.adjudicate(get_db(), current_user.id, image_id, class_id,
                         gold=request.form.get("gold") == "on")
    except store.StoreError as exc:
        abort(404, f"{exc}. Nothing was saved.")
    return _card(None)


@bp.post("/<int:image_id>/request")
@login_required(*REVIEWERS)
def send(image_id: int):
    """Send an image to the review queue (from the quality pages, or to reopen a label)."""
    try:
        store.request_review(get_db(), current_user.id, image_id)
    except store.StoreError as exc:
        abort(404, f"{exc}. Nothing was saved.")
    if htmx.is_htmx():
        return render_template("_sent_to_review.html", image_id=image_id)
    target = _safe_next(request.form.get("next"))
    return redirect(target or url_for("review.show", image_id=image_id))
