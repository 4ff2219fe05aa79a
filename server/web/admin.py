"""The admin page: images per class and status, annotators, users, imports, export."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import store
from ..dataset.import_report import understood_lines
from ..passwords import generate_password, hash_password
from .auth import login_required
from .context import get_db, get_project
from .rounds import status_context as round_status

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/")
@login_required("admin")
def index():
    return _page()


def _page(status: int = 200, **extra):
    db = get_db()
    runs = store.import_runs(db, limit=10)
    return render_template(
        "admin.html",
        project=get_project(),
        total=store.image_count(db),
        statuses=store.status_counts(db),
        classes=store.class_counts(db),
        annotators=store.annotator_stats(db),
        users=store.list_users(db),
        runs=runs,
        roles=store.ROLES,
        **round_status(),
        **extra,
    ), status


def _show_password(name: str, password: str, what: str):
    """A generated password goes into this one page only: not into a flash message, which
    travels in the (signed, not encrypted) session cookie."""
    return _page(new_password={"name": name, "password": password, "what": what})


@bp.post("/users")
@login_required("admin")
def add_user():
    name = request.form.get("name", "")
    role = request.form.get("role", "annotator")
    typed = request.form.get("password", "")
    # Kept exactly as typed (login compares it unstripped); blank means "generate one".
    password = typed if typed.strip() else generate_password()
    try:
        store.add_user(get_db(), name, role, hash_password(password))
    except (store.StoreError, ValueError) as exc:
        flash(f"User not added: {exc}", "error")
        return redirect(url_for("admin.index") + "#users")
    if typed.strip():
        flash(f"Added {role} {name.strip()!r} with the password you typed.", "info")
        return redirect(url_for("admin.index") + "#users")
    return _show_password(name.strip(), password, f"Added {role}")


def _user(user_id: int) -> dict:
    row = store.find_user_by_id(get_db(), user_id)
    if row is None:
        abort(404, f"No user with id {user_id}.")
    return row


@bp.post("/users/<int:user_id>/password")
@login_required("admin")
def reset_password(user_id: int):
    """A new generated password for the user; every session of theirs ends."""
    row = _user(user_id)
    password = generate_password()
    store.set_password(get_db(), row["id"], hash_password(password),
                       keep_token=current_user.token if row["id"] == current_user.id else None)
    return _show_password(row["name"], password, "New password for")


@bp.post("/users/<int:user_id>/active")
@login_required("admin")
def set_active(user_id: int):
    """Deactivate (no login, every session ended, images handed back) or activate."""
    row = _user(user_id)
    active = request.form.get("active") == "1"
    try:
        store.set_active(get_db(), row["id"], active)
    except store.StoreError as exc:
        flash(f"Not changed: {exc}.", "error")
        return redirect(url_for("admin.index") + "#users")
    flash(f"{row['name']} is {'active again' if active else 'deactivated: logged out everywhere'}.",
          "info")
    return redirect(url_for("admin.index") + "#users")


@bp.get("/imports/<int:import_id>")
@login_required("admin")
def import_report(import_id: int):
    db = get_db()
    run = store.import_run(db, import_id)
    if run is None:
        abort(404, f"No import with id {import_id}.")
    return render_template("import_report.html", run=run, issues=store.import_issues(db, import_id),
                           understood=understood_lines(run["understood"]))
