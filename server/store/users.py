"""Users and their roles. Passwords arrive here already hashed."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database

from .connection import StoreError, is_row_id, now_iso, write
from .sessions import end_sessions

ROLES = ("admin", "reviewer", "annotator")
NAME_MAX = 64


def check_user_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise StoreError("a user name cannot be empty")
    if len(name) > NAME_MAX or not name.isprintable():
        raise StoreError(
            f"a user name must be at most {NAME_MAX} printable characters, without newlines"
        )
    return name


def add_user(db: Database, name: str, role: str, password_hash: str) -> int:
    name = check_user_name(name)
    if role not in ROLES:
        raise StoreError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    try:
        with write(db):
            cursor = db.execute(
                "INSERT INTO users (name, role, password_hash, created_at, active)"
                " VALUES (?, ?, ?, ?, 1)",
                [name, role, password_hash, now_iso()],
            )
    except sqlite3.IntegrityError as exc:
        raise StoreError(f"a user named {name!r} already exists") from exc
    return cursor.lastrowid


def set_password(db: Database, user_id: int, password_hash: str,
                 keep_token: str | None = None) -> int:
    """A new password; every session of the user ends but `keep_token`'s (the person who
    changed their own password stays logged in where they did it). Returns how many
    sessions ended."""
    with write(db):
        db.execute("UPDATE users SET password_hash = ? WHERE id = ?", [password_hash, user_id])
        return end_sessions(db, user_id, keep_token)


def set_active(db: Database, user_id: int, active: bool) -> None:
    """Deactivate (no login, every session ended, leases given back) or activate a user.
    The last active admin cannot be deactivated: nobody could manage the project then."""
    with write(db):
        row = db.execute("SELECT role, active FROM users WHERE id = ?", [user_id]).fetchone()
        if row is None:
            raise StoreError(f"no user with id {user_id}")
        admins = db.execute(
            "SELECT count(*) FROM users WHERE role = 'admin' AND active = 1").fetchone()[0]
        if not active and row[0] == "admin" and row[1] and admins <= 1:
            raise StoreError("this is the last active admin; add or activate another admin first")
        db.execute("UPDATE users SET active = ? WHERE id = ?", [1 if active else 0, user_id])
        if not active:
            end_sessions(db, user_id)
            db.execute("DELETE FROM leases WHERE user_id = ?", [user_id])


def find_user_by_id(db: Database, user_id: int) -> dict | None:
    """A user by id, active or not."""
    rows = list(db.query("SELECT * FROM users WHERE id = ?", [user_id])) if is_row_id(
        user_id) else []
    return rows[0] if rows else None


def find_user(db: Database, name: str) -> dict | None:
    """A user by name, active or not (for activating one again)."""
    rows = list(db.query("SELECT * FROM users WHERE name = ?", [name.strip()]))
    return rows[0] if rows else None


def get_user(db: Database, user_id: int) -> dict | None:
    rows = list(db.query("SELECT * FROM users WHERE id = ? AND active = 1", [user_id]))
    return rows[0] if rows else None


def get_user_by_name(db: Database, name: str) -> dict | None:
    rows = list(db.query("SELECT * FROM users WHERE name = ? AND active = 1", [name.strip()]))
    return rows[0] if rows else None


def list_users(db: Database) -> list[dict]:
    return list(db.query("SELECT id, name, role, created_at, active FROM users ORDER BY name"))
