"""Blueprints: one per area. They speak HTTP and HTML; data comes from `server.store`."""

from __future__ import annotations

from flask import Flask

from . import (
    account,
    admin,
    agreement,
    annotate,
    auth,
    autolabel,
    bulk,
    errors,
    export,
    images,
    quality,
    review,
    rounds,
)
from .context import close_db


def register(app: Flask) -> None:
    auth.init_app(app)
    errors.init_app(app)
    app.teardown_appcontext(close_db)
    for module in (auth, account, annotate, images, admin, export, rounds, review, agreement,
                   bulk, quality, autolabel):
        app.register_blueprint(module.bp)
