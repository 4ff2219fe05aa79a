"""The admin page: images per class and status, annotators, users, imports, export."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from .. import store
from ..passwords import generate_password, hash_password
from .auth import login_required
from .context import get_db, get_project
from .rounds import status_context as round_status

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/")
@login_required("admin")
def index():
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
    )


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
    flash(f"Added {role} {name.strip()!r} with password: {password}", "password")
    return redirect(url_for("admin.index") + "#users")


@bp.get("/imports/<int:import_id>")
@login_required("admin")
def import_report(import_id: int):
    db = get_db()
    run = store.import_run(db, import_id)
    if run is None:
        abort(404, f"No import with id {import_id}.")
    return render_template("import_report.html", run=run, issues=store.import_issues(db, import_id))
