"""Login, logout, roles. Anonymous visitors reach only the login page and static files."""

from __future__ import annotations

import functools
import math
import secrets
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import (
    make_response as flask_response,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from htmx_flask import make_response

from .. import store
from ..passwords import hash_password, verify_password
from . import htmx
from .context import get_db

bp = Blueprint("auth", __name__)
login_manager = LoginManager()


class User(UserMixin):
    """The logged-in person, with the token of their server-side session (store.sessions):
    the cookie names the session, so ending its row ends the cookie."""

    def __init__(self, row: dict, token: str):
        self.id = row["id"]
        self.name = row["name"]
        self.role = row["role"]
        self.token = token

    def get_id(self) -> str:
        return f"{self.id}:{self.token}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@login_manager.user_loader
def load_user(session_id: str) -> User | None:
    """Checked on every request: the session must be live in the database (not logged out,
    not ended by a password change or a deactivation) and its user active."""
    user_id, _, token = session_id.partition(":")
    if not (user_id.isascii() and user_id.isdigit() and token):
        return None  # a cookie from before server-side sessions: log in again
    row = store.session_user(get_db(), int(user_id), token)
    return User(row, token) if row else None


def start_session(row: dict) -> None:
    """Log this user in with a new server-side session."""
    login_user(User(row, store.start_session(get_db(), row["id"])))


@login_manager.unauthorized_handler
def unauthorized() -> Response:
    """Not logged in, or the session expired. An htmx request is told to load the login
    page; its form post was not recorded, and the page says so."""
    # The home page is where a first visit lands: no "expired" there, just the login form.
    target = url_for("auth.login", next=_return_path(), expired=1 if request.path != "/" else None)
    if htmx.is_htmx():
        return make_response("Your session expired: log in again.", 401, redirect=target)
    return redirect(target)


def _return_path() -> str | None:
    """Where to go after logging in: the page the person was on. An htmx request names its
    page in HX-Current-URL; its own URL is often a POST-only endpoint (/label/7), as is
    any other form post's, and a GET there after login would answer 405."""
    if htmx.is_htmx():
        page = urlsplit(request.headers.get("HX-Current-URL", ""))
        return _safe_next(page.path + (f"?{page.query}" if page.query else ""))
    if request.method == "GET":
        return request.full_path if request.query_string else request.path
    return None


class LoginThrottle:
    """Failed logins, counted in memory per user name at a client address and per address:
    after `max_failures` within `window` seconds, that name may not log in from that address,
    or that address may not log in at all (not even with the right password), until the
    oldest failure is `window` seconds old. Counting a name only with its address means
    strangers guessing from elsewhere cannot lock the real person out; counting the address
    alone caps guesses spread over many names. A success clears only its own name-at-address
    count: one good login of the guesser's own must not reset the address's count. One per
    app (app.extensions), so it holds for one server process; behind a proxy the address is
    the proxy's unless server.behind_proxy is set."""

    MAX_KEYS = 10_000  # past this many names and addresses, forget those with no recent failure

    def __init__(self, max_failures: int = 10, window: float = 300.0, clock=time.monotonic):
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(name: str, address: str | None) -> list[tuple[str, str]]:
        address = address or "unknown"
        return [("name at address", f"{name.strip().casefold()}@{address}"),
                ("address", address)]

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, name: str, address: str | None) -> float:
        """Seconds until this name and address may try again; 0 when they may now."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in self._keys(name, address):
                times = self._recent(key, now)
                if len(times) >= self.max_failures:
                    wait = max(wait, times[-self.max_failures] + self.window - now)
        return wait

    def failed(self, name: str, address: str | None) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > self.MAX_KEYS:  # guesses under ever new names
                for key in list(self._failures):
                    self._recent(key, now)
            for key in self._keys(name, address):
                self._recent(key, now)
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, name: str, address: str | None) -> None:
        with self._lock:
            self._failures.pop(self._keys(name, address)[0], None)


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.extensions["login_throttle"] = LoginThrottle(
        app.config.get("LOGIN_MAX_FAILURES", 10), app.config.get("LOGIN_WINDOW_SECONDS", 300)
    )


def _throttle() -> LoginThrottle:
    return current_app.extensions["login_throttle"]


def _wait_text(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


# Where each role lands after logging in. A reviewer starts on the review queue: opening the
# labeling page would lease images and keep them from annotators.
LANDING = {"admin": "admin.index", "reviewer": "review.index"}


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
        throttle, address = _throttle(), request.remote_addr
        wait = throttle.retry_after(name, address)
        if wait > 0:
            # Refused before the password is even checked: a right guess now is no
            # different from a wrong one, so guessing on through the lockout gains nothing.
            flash(
                "Too many failed logins for this user name from this address, or from this"
                f" address: login is blocked for now. Try again in {_wait_text(wait)}.",
                "error",
            )
            response = flask_response(render_template("login.html", name=name), 429)
            response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return response
        row = store.get_user_by_name(get_db(), name) if name.strip() else None
        if row is None:
            # Spend the same hashing time as for a known name, so response times do not
            # tell which user names exist.
            verify_password(_unknown_user_hash(), password)
        elif verify_password(row["password_hash"], password):
            throttle.succeeded(name, address)
            start_session(row)
            default = url_for(LANDING.get(row["role"], "annotate.label"))
            return redirect(_safe_next(request.args.get("next")) or default)
        throttle.failed(name, address)
        flash("Unknown user name or wrong password.", "error")
        return render_template("login.html", name=name), 401
    if request.args.get("expired") and not current_user.is_authenticated:
        flash("Your session has expired or you are not logged in. Log in to continue.", "info")
    return render_template("login.html", name="")


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        store.release_leases(get_db(), current_user.id)
        store.end_session(get_db(), current_user.token)  # a saved copy of the cookie dies too
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.get("/")
@login_required()
def home():
    return redirect(url_for(LANDING.get(current_user.role, "annotate.label")))
