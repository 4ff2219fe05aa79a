"""Password hashing (argon2) and generated passwords."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
MIN_LENGTH = 8
# zxcvbn's guessability score, 0-4: below 2 a password falls to an online guesser (it is
# among the most common passwords, a keyboard walk, one character repeated, a date).
MIN_SCORE = 2


def check_password(password: str) -> None:
    """Raise ValueError, saying why, for a password too short or too easy to guess."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    if len(set(password)) == 1:
        raise ValueError("a password of one character repeated is too easy to guess")
    from zxcvbn import zxcvbn  # its word lists load on first use, not at import

    verdict = zxcvbn(password[:100])  # its cost grows with the length; 100 says enough
    if verdict["score"] < MIN_SCORE:
        warning = verdict["feedback"]["warning"] or "it is too easy to guess"
        raise ValueError(f"that password is too easy to guess: {warning.rstrip('.')}."
                         " Use a longer one, e.g. a few unrelated words")


def hash_password(password: str) -> str:
    check_password(password)
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """A password a person can read aloud and type: 4 groups of 4 letters/digits."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))
