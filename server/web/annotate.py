"""The labeling page: one image at a time, a key per class, the next image already loaded."""

from __future__ import annotations

from flask import Blueprint, abort, request
from flask_login import current_user

from .. import store
from ..jobs.queue import maybe_auto_retrain
from ..store.rounds import card_suggestion
from . import htmx
from .auth import login_required
from .context import get_db, get_project, get_tasks

bp = Blueprint("annotate", __name__)

# 1-9, then letters; s (skip), u (unsure) and z (undo) are taken.
CLASS_KEYS = "123456789abcdefghijklmnopqrtvwxy"
OWN_KEYS = set(CLASS_KEYS) | {"0"}


def keyed_classes(classes: list[dict]) -> list[dict]:
    """A key per class: a class named by one free key character gets that key (so the
    digit '3' is labeled with 3), the others take 1-9 then letters in order."""
    own = {c["name"].lower() for c in classes if c["name"].lower() in OWN_KEYS}
    if len(own) != sum(1 for c in classes if c["name"].lower() in OWN_KEYS):
        own = set()  # 'A' and 'a' both: fall back to plain order
    spare = iter(k for k in CLASS_KEYS if k not in own)
    keyed = []
    for c in classes:
        name = c["name"].lower()
        keyed.append({**c, "key": name if name in own else next(spare, None)})
    return keyed


def _card(status: int = 200):
    """The card: the image to label now, the one after it (prefetched), the counts."""
    db = get_db()
    project = get_project()
    upcoming = store.next_images(
        db, current_user.id, n=2, lease_seconds=project.config.lease_seconds
    )
    context = {
        "image_id": upcoming[0] if upcoming else None,
        "prefetch_id": upcoming[1] if len(upcoming) > 1 else None,
        "classes": keyed_classes(store.classes(db)),
        "last": store.last_answer(db, current_user.id),
        "today": store.count_today(db, current_user.id),
        "left": store.images_left(db, current_user.id),
        "suggestion": None,
    }
    if upcoming and project.config.show_suggestion:
        context["suggestion"] = card_suggestion(db, upcoming[0])
    if upcoming and not project.config.blind:  # the admin lets annotators see others' votes
        context["others"] = [
            v for v in store.image_votes(db, upcoming[0])
            if v["user_id"] != current_user.id and v["kind"] in ("label", "unsure")
            and not v["undone"]
        ]
    return htmx.fragment_or_page("_card.html", "label.html", **context), status


@bp.get("/label")
@login_required()
def label():
    return _card()


def _choice(raw: str) -> tuple[str, int | None]:
    """The posted answer as (kind, class id); a 400 for anything else."""
    if raw in ("skip", "unsure"):
        return raw, None
    if not (raw.isascii() and raw.isdigit()):
        abort(400, "Missing or malformed answer: expected a class id, 'skip' or 'unsure'.")
    class_id = htmx.row_id(raw)
    if class_id is None or store.class_by_id(get_db(), class_id) is None:
        abort(400, f"Unknown class id {raw[:20]}. Reload the page: the classes may have changed.")
    return "label", class_id


@bp.post("/label/<int:image_id>")
@login_required()
def answer(image_id: int):
    """Record the answer for the image the page showed (its id is in the URL), then send
    the next card. Answering the same image twice (double key press, stale tab) is
    harmless: the second answer is not recorded. An image that was not handed to this
    person (someone else's card, a finished image) is a 409, with nothing written."""
    kind, class_id = _choice(request.form.get("choice", ""))
    try:
        store.add_handed_vote(
            get_db(),
            current_user.id,
            image_id,
            kind,
            class_id,
            seconds=htmx.elapsed_seconds(request.form.get("elapsed_ms")),
        )
    except store.AlreadyAnswered:
        pass  # the first answer stands; show what comes next
    except store.NotHanded as exc:
        abort(409, f"Not saved: {exc}. Reload the page for your next image.")
    except store.StoreError as exc:
        abort(404, f"{exc}. Nothing was saved.")
    else:
        maybe_auto_retrain(get_project(), get_tasks(), get_db())
    return _card()


@bp.post("/label/undo")
@login_required()
def undo():
    """Take back one answer: the id posted is the answer the page offered to undo, so a
    repeated key press undoes it once, never the answer before it."""
    annotation_id = htmx.row_id(request.form.get("annotation_id"))
    if annotation_id is None:
        abort(400, "Nothing to undo.")
    try:
        store.undo_latest(
            get_db(), current_user.id, annotation_id,
            lease_seconds=get_project().config.lease_seconds,
        )
    except store.NotHanded as exc:
        abort(409, f"Cannot undo: {exc}. Nothing was changed.")
    except store.StoreError as exc:
        abort(400, f"Cannot undo: {exc}.")
    return _card()
