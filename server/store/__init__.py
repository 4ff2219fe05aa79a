"""All SQL lives in this package. Callers get plain dicts, ints and dataclasses back.

Every function takes the `Database` returned by `connect()` first. Writes that must be seen
whole (a vote and the state it changes, a lease) run in `write()`, a BEGIN IMMEDIATE
transaction, so concurrent annotators queue up on SQLite's lock instead of failing.
"""

from __future__ import annotations

from .connection import StoreError, connect, is_row_id, now_iso, write
from .images import (
    add_classes,
    add_images,
    check_class_name,
    class_by_id,
    classes,
    finish_import,
    get_image,
    image_count,
    import_issues,
    import_run,
    import_runs,
    known_hashes,
    start_import,
)
from .labels import (
    AlreadyAnswered,
    add_vote,
    labeled_images,
    last_answer,
    retract,
    state_of,
)
from .queue import images_left, next_images, release_leases
from .stats import annotator_stats, class_counts, count_today, status_counts
from .users import ROLES, add_user, get_user, get_user_by_name, list_users, set_password

__all__ = [
    "ROLES",
    "AlreadyAnswered",
    "StoreError",
    "add_classes",
    "add_images",
    "add_user",
    "add_vote",
    "annotator_stats",
    "check_class_name",
    "class_by_id",
    "class_counts",
    "classes",
    "connect",
    "count_today",
    "finish_import",
    "get_image",
    "get_user",
    "get_user_by_name",
    "image_count",
    "images_left",
    "import_issues",
    "import_run",
    "import_runs",
    "is_row_id",
    "known_hashes",
    "labeled_images",
    "last_answer",
    "list_users",
    "next_images",
    "now_iso",
    "release_leases",
    "retract",
    "set_password",
    "start_import",
    "state_of",
    "status_counts",
    "write",
]
