"""Error pages: a full page for a browser, a short text for an htmx request (shown in the
page's message bar by static/app.js)."""

from __future__ import annotations

from flask import Flask, render_template, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .auth import login_manager

MESSAGES = {
    400: "The request was not understood.",
    403: "You do not have access to this page.",
    404: "There is nothing here.",
    405: "That action is not allowed here.",
    413: "The request is too large.",
}


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _respond(status: int, message: str):
    if _is_htmx():
        return message, status, {"Content-Type": "text/plain; charset=utf-8"}
    return render_template("error.html", status=status, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        # An expired session has lost its CSRF token along with the login, and the CSRF
        # check runs first: send an htmx page to the login page instead of a message
        # saying "reload". Nothing was written either way.
        if _is_htmx() and not current_user.is_authenticated:
            return login_manager.unauthorized()
        return _respond(
            400,
            "This form is out of date or lacks its security token "
            f"({exc.description}). Reload the page and try again; nothing was saved.",
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        custom = exc.description and exc.description != type(exc).description
        message = exc.description if custom else MESSAGES.get(exc.code, exc.name)
        return _respond(exc.code or 500, message)
