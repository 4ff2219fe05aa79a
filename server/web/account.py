"""A person's own account: changing their password (every other session of theirs ends)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import store
from ..passwords import hash_password, verify_password
from .auth import login_required
from .context import get_db

bp = Blueprint("account", __name__, url_prefix="/account")


@bp.route("/password", methods=["GET", "POST"])
@login_required()
def password():
    if request.method == "GET":
        return render_template("password.html")
    db = get_db()
    current = request.form.get("current", "")
    new = request.form.get("new", "")
    again = request.form.get("again", "")
    row = store.get_user(db, current_user.id)
    problem = None
    if row is None or not verify_password(row["password_hash"], current):
        problem = "Your current password is not right."
    elif new != again:
        problem = "The two new passwords differ."
    elif new == current:
        problem = "The new password is the current one."
    if problem is None:
        try:
            hashed = hash_password(new)
        except ValueError as exc:
            problem = f"Not changed: {exc}."
    if problem is not None:
        flash(f"{problem} Your password is unchanged.", "error")
        return render_template("password.html"), 400
    ended = store.set_password(db, current_user.id, hashed, keep_token=current_user.token)
    others = f" {ended} other session{'s' if ended != 1 else ''} ended." if ended else ""
    flash(f"Your password is changed.{others}", "info")
    return redirect(url_for("auth.home"))
