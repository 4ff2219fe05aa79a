"""Users and their roles. Passwords arrive here already hashed."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database

from .connection import StoreError, now_iso, write

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


def set_password(db: Database, user_id: int, password_hash: str) -> None:
    with write(db):
        db.execute("UPDATE users SET password_hash = ? WHERE id = ?", [password_hash, user_id])


def get_user(db: Database, user_id: int) -> dict | None:
    rows = list(db.query("SELECT * FROM users WHERE id = ? AND active = 1", [user_id]))
    return rows[0] if rows else None


def get_user_by_name(db: Database, name: str) -> dict | None:
    rows = list(db.query("SELECT * FROM users WHERE name = ? AND active = 1", [name.strip()]))
    return rows[0] if rows else None


def list_users(db: Database) -> list[dict]:
    return list(db.query("SELECT id, name, role, created_at FROM users ORDER BY name"))
