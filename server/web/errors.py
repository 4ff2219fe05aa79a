"""Error pages: a full page for a browser, a short text for an htmx request (shown in the
page's message bar by static/app.js)."""

from __future__ import annotations

import logging

from flask import Flask, current_app, render_template, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .. import store
from ..jobs.queue import JobNotQueued
from . import htmx
from .auth import login_manager

MESSAGES = {
    400: "The request was not understood.",
    403: "You do not have access to this page.",
    404: "There is nothing here.",
    405: "That action is not allowed here.",
    413: "The request is too large: nothing was saved.",
}

log = logging.getLogger("activelabel.web")


def _respond(status: int, message: str):
    if htmx.is_htmx():
        return message, status, {"Content-Type": "text/plain; charset=utf-8"}
    return render_template("error.html", status=status, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        # An expired session has lost its CSRF token along with the login, and the CSRF
        # check runs first: send an htmx page to the login page instead of a message
        # saying "reload". Nothing was written either way.
        if htmx.is_htmx() and not current_user.is_authenticated:
            return login_manager.unauthorized()
        return _respond(
            400,
            "This form is out of date or lacks its security token "
            f"({exc.description}). Reload the page and try again; nothing was saved.",
        )

    @app.errorhandler(store.DatabaseError)
    def database_error(exc: store.DatabaseError):
        """A database that cannot be written (read-only file, full disk, a lock held past
        the busy timeout): the transaction was rolled back, so say that the answer was not
        saved and that trying again later is the remedy. Anything else is a bug: 500."""
        reason = store.unwritable_reason(exc)
        if reason is None:
            log.exception("database error on %s %s", request.method, request.path)
            return _respond(500, "Something went wrong on the server; nothing was saved.")
        log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        body, status, *headers = _respond(
            503,
            f"The database cannot be written right now ({reason}); your last answer was"
            " not saved. Try again shortly.",
        )
        extra = headers[0] if headers else {}
        return body, status, {**extra, "Retry-After": "30"}

    @app.errorhandler(JobNotQueued)
    def job_not_queued(exc: JobNotQueued):
        log.warning("job not queued on %s %s: %s", request.method, request.path, exc)
        return _respond(503, f"The job was not started: {exc}. Nothing else changed; check"
                             " the task queue (jobs.redis_url) and try again.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        custom = exc.description and exc.description != type(exc).description
        message = exc.description if custom else MESSAGES.get(exc.code, exc.name)
        if exc.code == 413 and not custom:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            if limit:
                message = f"The request is larger than {limit // 1024} KiB: nothing was saved."
        if exc.code == 404 and not custom and request.method not in ("GET", "HEAD"):
            message += " Nothing was saved."  # a post to an id that names nothing
        return _respond(exc.code or 500, message)
