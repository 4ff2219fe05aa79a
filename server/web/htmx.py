"""The one place that reads what an htmx request says about itself, and the form and URL
values every blueprint parses the same way (ids typed as digits, seconds measured in the
browser)."""

from __future__ import annotations

from flask import abort, render_template, request

from .. import store

# Longer than this on one card or grid is a tab left open, not time spent looking.
MAX_SECONDS = 3600.0


def is_htmx() -> bool:
    """Whether htmx sent this request (it swaps in a fragment, not a whole page)."""
    return request.headers.get("HX-Request") == "true"


def fragment_or_page(fragment: str, page: str, **context) -> str:
    """The fragment alone for htmx, the page around it for a plain request (the page
    includes the fragment, so both show the same HTML)."""
    return render_template(fragment if is_htmx() else page, **context)


def row_id(raw: str | None) -> int | None:
    """A positive id typed as plain ASCII digits, else None. str.isdigit alone accepts
    characters such as '²' that int() refuses; sqlite3 refuses integers past 64 bits."""
    raw = (raw or "").strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if store.is_row_id(value) else None


def whole_number(raw: str | None, what: str, low: int = 0) -> int:
    """A non-negative integer typed as ASCII digits, else a 400 naming the field."""
    raw = (raw or "").strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or int(raw) < low:
        abort(400, f"Missing or malformed {what}: expected a whole number, got {raw[:20]!r}.")
    return int(raw)


def one_of(raw: str | None, allowed: tuple[str, ...], what: str) -> str:
    """One of `allowed` (the first when absent), else a 400 naming the field and its
    values."""
    value = allowed[0] if raw is None else raw
    if value not in allowed:
        abort(400, f"{what} is one of {', '.join(map(repr, allowed))}, not {value[:20]!r}."
                   " Nothing was written.")
    return value


def elapsed_seconds(raw: str | None) -> float | None:
    """How long the person looked, posted by the browser in milliseconds; None when absent
    or absurd (it is a measurement, never a reason to refuse an answer)."""
    try:
        seconds = float(raw) / 1000.0 if raw else None
    except ValueError:
        return None
    if seconds is None or not 0.0 <= seconds <= MAX_SECONDS:
        return None
    return round(seconds, 3)
