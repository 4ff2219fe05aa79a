"""Error pages: a full page for a browser, a short text for an htmx request (shown in the
page's message bar by static/app.js)."""

from __future__ import annotations

from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

MESSAGES = {
    400: "The request was not understood.",
    403: "You do not have access to this page.",
    404: "There is nothing here.",
    405: "That action is not allowed here.",
    413: "The request is too large.",
}


def _respond(status: int, message: str):
    if request.headers.get("HX-Request") == "true":
        return message, status, {"Content-Type": "text/plain; charset=utf-8"}
    return render_template("error.html", status=status, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
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
