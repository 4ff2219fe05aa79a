"""Per-request access to the project and its database (one connection per request)."""

from __future__ import annotations

from flask import current_app, g

from .. import store
from ..config import Project


def get_project() -> Project:
    return current_app.extensions["activelabel"]


def get_db() -> store.Database:
    if "db" not in g:
        g.db = store.connect(get_project().db_path, migrate=False)
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.conn.close()


def get_tasks():
    """The project's task queue (jobs.queue.TaskQueue), built once in create_app."""
    return current_app.extensions["jobs"]
