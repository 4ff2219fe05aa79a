"""Security headers on every response, and a refusal of state-changing requests sent from
another site's page."""

from __future__ import annotations

from flask import Flask, Response, abort, request

# Everything the pages load is ours: scripts and styles from static/ (no inline script, no
# style attribute; htmx's own indicator <style> is switched off in base.html), images from
# /images/ and the empty data: favicon, htmx's requests to this server.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "frame-ancestors 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "object-src 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CROSS_SITE_MESSAGE = "Cross-site request refused; nothing was saved."


def own_origin() -> str:
    """scheme://host of this request as Flask sees it (after ProxyFix when behind a proxy)."""
    return request.host_url.rstrip("/")


def refuse_cross_site() -> None:
    """A browser names the page a request comes from in Origin; one from another site's page
    is refused before anything runs. No Origin (curl, the CLI, older browsers) is let through:
    the CSRF token still guards every form."""
    if request.method not in STATE_CHANGING:
        return
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/").lower() != own_origin().lower():
        abort(403, CROSS_SITE_MESSAGE)


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """Call before CSRFProtect(app), so a cross-site post is told why it was refused rather
    than that its form lacks a token."""
    app.before_request(refuse_cross_site)
    app.after_request(add_security_headers)
