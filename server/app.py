"""The application factory: everything the web app needs is built here, nothing at import."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from flask import Flask
from flask_wtf.csrf import CSRFProtect
from htmx_flask import Htmx
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from .config import Project


class RowIdConverter(IntegerConverter):
    """`<int:...>` in every route: at most SQLite's largest integer."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)


def _asset_folder(name: str) -> str:
    """templates/ and static/ sit at the repository's top level in a checkout and inside
    the package in an installed wheel."""
    packaged = Path(__file__).parent / name
    return str(packaged if packaged.is_dir() else Path(__file__).parent.parent / name)


def create_app(project_dir: str | os.PathLike | None = None, test_config: dict | None = None):
    project = Project.open(project_dir or os.environ["ACTIVELABEL_PROJECT"])
    app = Flask(
        __name__,
        template_folder=_asset_folder("templates"),
        static_folder=_asset_folder("static"),
    )
    app.config.update(
        SECRET_KEY=project.secret_key(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        # The token lives as long as the session: a tab left open for an hour still works.
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=1024 * 1024,
        SESSION_COOKIE_SECURE=project.config.secure_cookies,
        REMEMBER_COOKIE_SECURE=project.config.secure_cookies,
    )
    if project.config.behind_proxy:
        # One proxy in front: its X-Forwarded-* say the client's address and scheme.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)
    # An id past SQLite's 64-bit integers (/admin/imports/9223372036854775808) is a 404,
    # like any other id that names nothing, not an OverflowError deep in a query.
    app.url_map.converters["int"] = RowIdConverter
    if test_config:
        app.config.update(test_config)
    app.extensions["activelabel"] = project
    from .projects import open_db

    open_db(project).conn.close()  # applies pending migrations and the consensus rules once

    from .jobs.queue import make_queue

    app.extensions["jobs"] = make_queue(project)  # enqueues jobs; the worker runs them
    Htmx(app)
    from .web import headers, upload

    headers.init_app(app)  # before CSRFProtect: a cross-site post is refused first
    CSRFProtect(app)

    from .web import register

    register(app)
    upload.init_app(app)  # large bodies: checks its own CSRF token before reading them
    return app
