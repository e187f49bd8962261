"""The web chat connector's HTTP routes besides the socket: the widget script, the demo page,
uploads and the signed file links."""

from __future__ import annotations

import gzip
import hashlib
import html
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from aiohttp import BodyPartReader, web
from prometheus_client import Counter
from pymongo.errors import PyMongoError

from connectors.webchat.config import UPLOADABLE, Inbox
from connectors.webchat.parse import SHA256, FrameError, clean_filename, file_link, sniff
from hub.web import error_response, json_response
from store import blobs

if TYPE_CHECKING:
    from connectors.webchat.service import WebchatConnector

log = logging.getLogger("omnihub.webchat")

STATIC = Path(__file__).parent / "static"
UPLOADS = Counter("omnihub_webchat_uploads_total", "widget uploads", ["outcome"])
CHUNK = 64 * 1024
_LANG = re.compile(r"^(fa|en)$")


class _Asset:
    """A static file held in memory, with its gzip form and a strong ETag."""

    def __init__(self, path: Path, content_type: str) -> None:
        self.body = path.read_bytes()
        self.gzipped = gzip.compress(self.body, 9, mtime=0)
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'
        self.content_type = content_type

    def response(self, request: web.Request) -> web.Response:
        headers = {
            "ETag": self.etag,
            "Cache-Control": "public, max-age=300",
            "Access-Control-Allow-Origin": "*",
            "Cross-Origin-Resource-Policy": "cross-origin",
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304, headers=headers)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = self.gzipped
        else:
            body = self.body
        return web.Response(
            body=body, headers=headers, content_type=self.content_type, charset="utf-8"
        )


def add_routes(app: web.Application, connector: WebchatConnector) -> None:
    widget = _Asset(STATIC / "widget.js", "application/javascript")
    demo = (STATIC / "demo.html").read_text(encoding="utf-8")

    async def widget_js(request: web.Request) -> web.Response:
        return widget.response(request)

    async def demo_page(request: web.Request) -> web.Response:
        lang = request.query.get("lang", "fa")
        lang = lang if _LANG.match(lang) else "fa"
        inbox = request.query.get("inbox", "default")
        if inbox not in connector.inboxes:
            inbox = next(iter(connector.inboxes))
        page = (
            demo.replace("{{lang}}", lang)
            .replace("{{dir}}", "rtl" if lang == "fa" else "ltr")
            .replace("{{base}}", html.escape(connector.settings.webchat_url, quote=True))
            .replace("{{inbox}}", html.escape(inbox, quote=True))
        )
        return web.Response(
            text=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    async def upload(request: web.Request) -> web.Response:
        return await _upload(connector, request)

    async def files(request: web.Request) -> web.Response:
        return await _file(connector, request)

    app.router.add_get("/widget.js", widget_js)
    app.router.add_get("/demo", demo_page)
    app.router.add_get("/", _to_demo)
    app.router.add_post("/upload", upload)
    app.router.add_route("OPTIONS", "/upload", upload)
    app.router.add_get("/files/{sha}", files)


async def _to_demo(request: web.Request) -> web.Response:
    raise web.HTTPFound("/demo")


def _cors(inbox: Inbox | None, origin: str | None) -> dict[str, str]:
    if inbox is None or not origin or not inbox.origin_allowed(origin):
        return {"Vary": "Origin"}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def _fail(
    status: int, code: str, message: str, field: str | None, cors: dict[str, str]
) -> web.Response:
    UPLOADS.labels(code).inc()
    resp = error_response(status, code, message, field)
    resp.headers.update(cors)
    return resp


async def _upload(connector: WebchatConnector, request: web.Request) -> web.Response:
    """multipart/form-data: ``visitor`` (the token from ``welcome``) first, then ``file``."""
    inbox = connector.inboxes.get(request.query.get("inbox", "default"))
    origin = request.headers.get("Origin")
    cors = _cors(inbox, origin)
    if inbox is None:
        return _fail(404, "unknown_inbox", "inbox: no such web chat inbox", "inbox", cors)
    if not inbox.origin_allowed(origin):
        return _fail(
            403, "origin_not_allowed", "this page's origin may not upload here", None, cors
        )
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=cors)
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        return _fail(
            400, "invalid_body", "send multipart/form-data with visitor and file", None, cors
        )
    visitor_id: str | None = None
    data = b""
    part_type = name = ""
    limit = inbox.upload_max_bytes
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "visitor":
            token = (await part.read(decode=False))[:300].decode(errors="replace")
            found = connector.signer.check_visitor(inbox.id, token)
            if found is None:
                return _fail(
                    401, "visitor_invalid", "visitor: not a valid visitor token", "visitor", cors
                )
            visitor_id = found[0]
        elif part.name == "file":
            if visitor_id is None:
                return _fail(400, "invalid_field", "visitor: send it before file", "visitor", cors)
            part_type = part.headers.get("Content-Type", "")
            # browsers send UTF-8 names raw, some clients percent-encode them
            name = clean_filename(unquote(part.filename or ""))
            chunks: list[bytes] = []
            size = 0
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                if size > limit:
                    return _fail(413, "too_large", f"file: larger than {limit} bytes", "file", cors)
                chunks.append(chunk)
            data = b"".join(chunks)
    if visitor_id is None:
        return _fail(400, "invalid_field", "visitor: required", "visitor", cors)
    if not data:
        return _fail(400, "invalid_field", "file: required, not empty", "file", cors)
    wait = connector.limiter.take(
        f"up\x1f{inbox.id}\x1f{visitor_id}",
        rate=inbox.visitor_rate,
        burst=inbox.visitor_burst,
        now=time.monotonic(),
    )
    if wait:
        return _fail(429, "rate_limited", f"too many uploads; wait {wait:.0f} s", None, cors)
    try:
        kind = sniff(data, part_type, list(inbox.upload_types))
    except FrameError as exc:
        return _fail(415, exc.code, str(exc), exc.field, cors)
    try:
        sha = await blobs.put(
            connector.store, data, metadata={"inbox": inbox.id, "type": kind, "via": "webchat"}
        )
    except PyMongoError as exc:
        log.warning("webchat.upload_unavailable error=%s", exc)
        return _fail(503, "unavailable", "the file cannot be stored right now; retry", None, cors)
    UPLOADS.labels("ok").inc()
    att = {"sha256": sha, "name": name, "type": kind, "size": len(data)}
    receipt = {
        **att,
        "token": connector.signer.upload(inbox.id, visitor_id, sha, name, kind, len(data)),
        "url": connector.settings.webchat_url
        + file_link(connector.signer, inbox.id, visitor_id, att),
    }
    resp = json_response({"attachment": receipt}, 201)
    resp.headers.update(cors)
    return resp


async def _file(connector: WebchatConnector, request: web.Request) -> web.Response:
    """A blob of one visitor's chat: the link is signed for that visitor, inbox and type."""
    sha = request.match_info["sha"]
    q = request.query
    inbox, visitor_id, type_, sig = q.get("i", ""), q.get("v", ""), q.get("t", ""), q.get("s", "")
    if (
        not SHA256.match(sha)
        or inbox not in connector.inboxes
        or not connector.signer.file_ok(inbox, visitor_id, sha, type_, sig)
    ):
        return error_response(403, "forbidden", "this link is not valid")
    try:
        data = await blobs.get(connector.store, sha)
    except PyMongoError:
        return error_response(503, "unavailable", "the file cannot be read right now; retry")
    if data is None:
        return error_response(404, "not_found", "file not found")
    name = clean_filename(q.get("n"))
    # only the types uploads are checked for are shown as themselves (an agent's attachment
    # of another type is a download, never something the browser would run)
    shown = type_ if type_ in UPLOADABLE else "application/octet-stream"
    disposition = "inline" if shown.startswith("image/") else "attachment"
    return web.Response(
        body=data,
        content_type=shown,
        headers={
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(name)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, max-age=86400",
            "Cross-Origin-Resource-Policy": "cross-origin",
        },
    )
