"""Login sessions, ended on the server: each login is a row keyed by the hash of a random
token that only the person's (signed) cookie carries. A session counts while its row is
not ended and its user is active; logout ends one, a password change or a deactivation
ends all of a user's others."""

from __future__ import annotations

import hashlib
import secrets

from sqlite_utils import Database

from .connection import now_iso, write


def _hash(token: str) -> str:
    # Only the hash is stored: a copy of the database names no live cookie.
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(db: Database, user_id: int) -> str:
    """A new session for this user; returns the token for the cookie."""
    token = secrets.token_urlsafe(32)
    with write(db):
        db.execute("INSERT INTO sessions (token_hash, user_id, created_at) VALUES (?, ?, ?)",
                   [_hash(token), user_id, now_iso()])
    return token


def session_user(db: Database, user_id: int, token: str) -> dict | None:
    """The active user this live session belongs to, or None (ended, another user's token,
    a deactivated user)."""
    rows = list(db.query(
        "SELECT u.* FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?"
        " AND s.user_id = ? AND s.ended_at IS NULL AND u.active = 1", [_hash(token), user_id]))
    return rows[0] if rows else None


def end_session(db: Database, token: str) -> None:
    with write(db):
        db.execute("UPDATE sessions SET ended_at = ? WHERE token_hash = ? AND ended_at IS NULL",
                   [now_iso(), _hash(token)])


def end_sessions(db: Database, user_id: int, keep_token: str | None = None) -> int:
    """End every live session of this user but the one with `keep_token`; returns how
    many were ended. Joins the caller's transaction."""
    keep = _hash(keep_token) if keep_token else ""
    with write(db):
        cursor = db.execute(
            "UPDATE sessions SET ended_at = ? WHERE user_id = ? AND ended_at IS NULL"
            " AND token_hash != ?", [now_iso(), user_id, keep])
    return cursor.rowcount
