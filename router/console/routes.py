"""Serving the console's files with a strict Content-Security-Policy.

The policy allows only the console's own scripts, styles and images and WebSocket/fetch to
the same origin; no inline script or style, no plugins, no framing of the console. E-mail HTML
is shown in ``<iframe sandbox srcdoc>`` frames, which inherit this policy: their images from
elsewhere do not load (no tracking pixels) and nothing in them can run.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from hub.web import ApiError

STATIC = Path(__file__).resolve().parent / "static"

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "frame-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    # small files that change with each release: revalidate (ETag) rather than go stale
    "Cache-Control": "no-cache",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# one optional folder level, lower-case names: nothing else under static/ is served
_NAME = re.compile(r"^(?:[a-z0-9_-]+/)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.(?:html|js|css|svg)$")


def _file(name: str) -> web.FileResponse:
    path = (STATIC / name).resolve()
    if not _NAME.match(name) or not path.is_relative_to(STATIC) or not path.is_file():
        raise ApiError(404, "not_found", "no such console file")
    headers = {**SECURITY_HEADERS, "Content-Type": TYPES[path.suffix]}
    return web.FileResponse(path, headers=headers)


async def index(request: web.Request) -> web.FileResponse:
    return _file("index.html")


async def asset(request: web.Request) -> web.FileResponse:
    return _file(request.match_info["name"])


async def to_console(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console/")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", to_console),
        web.get("/console", to_console),
        web.get("/console/", index),
        web.get("/console/{name:.+}", asset),
    ]
