"""Login, logout, roles. Anonymous visitors reach only the login page and static files."""

from __future__ import annotations

import functools
import secrets
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from htmx_flask import make_response

from .. import store
from ..passwords import hash_password, verify_password
from .context import get_db

bp = Blueprint("auth", __name__)
login_manager = LoginManager()


class User(UserMixin):
    def __init__(self, row: dict):
        self.id = row["id"]
        self.name = row["name"]
        self.role = row["role"]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    row = store.get_user(get_db(), int(user_id))
    return User(row) if row else None


@login_manager.unauthorized_handler
def unauthorized() -> Response:
    """Not logged in, or the session expired. An htmx request is told to load the login
    page; its form post was not recorded, and the page says so."""
    target = url_for("auth.login", next=_return_path(), expired=1)
    if request.headers.get("HX-Request") == "true":
        return make_response("Your session expired: log in again.", 401, redirect=target)
    return redirect(target)


def _return_path() -> str | None:
    """Where to go after logging in: the page the person was on. An htmx request names its
    page in HX-Current-URL; its own URL is often a POST-only endpoint (/label/7), as is
    any other form post's, and a GET there after login would answer 405."""
    if request.headers.get("HX-Request") == "true":
        page = urlsplit(request.headers.get("HX-Current-URL", ""))
        return _safe_next(page.path + (f"?{page.query}" if page.query else ""))
    if request.method == "GET":
        return request.full_path if request.query_string else request.path
    return None


def init_app(app: Flask) -> None:
    login_manager.init_app(app)


def login_required(*roles: str):
    """Require a logged-in user, and one of `roles` if any are given."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if roles and current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_roles = roles or ("any",)
        return wrapped

    return decorator


def _safe_next(target: str | None) -> str | None:
    """Only same-site paths: an attacker's link cannot send a user elsewhere after login."""
    if not target or not target.startswith("/") or not target.isprintable():
        return None
    # Browsers read a backslash as a slash, so "/\evil.com" is as off-site as "//evil.com".
    if "\\" in target or target.startswith("//"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


@functools.cache
def _unknown_user_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        name = request.form.get("name", "")
        password = request.form.get("password", "")
        row = store.get_user_by_name(get_db(), name) if name.strip() else None
        if row is None:
            # Spend the same hashing time as for a known name, so response times do not
            # tell which user names exist.
            verify_password(_unknown_user_hash(), password)
        elif verify_password(row["password_hash"], password):
            login_user(User(row))
            default = url_for("admin.index") if row["role"] == "admin" else url_for(
                "annotate.label"
            )
            return redirect(_safe_next(request.args.get("next")) or default)
        flash("Unknown user name or wrong password.", "error")
        return render_template("login.html", name=name), 401
    if request.args.get("expired") and not current_user.is_authenticated:
        flash("Your session has expired or you are not logged in. Log in to continue.", "info")
    return render_template("login.html", name="")


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        store.release_leases(get_db(), current_user.id)
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.get("/")
@login_required()
def home():
    return redirect(url_for("admin.index" if current_user.is_admin else "annotate.label"))
