"""Taking back an audit's step (the agreement page's or the quality page's "send these to
review"), said the same way on both pages."""

from __future__ import annotations

from flask import flash

from ..store import audit_actions


def undo_latest(db, user_id: int) -> None:
    """Undo this person's latest audit step, with a flash saying what was taken back."""
    action = audit_actions.undo_review_action(db, user_id)
    if action is None:
        flash("Nothing to undo: no review requests of yours from an audit are left.", "error")
    else:
        flash(f"Took back {action['labeled']} review requests.", "ok")
