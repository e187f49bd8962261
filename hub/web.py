"""The HTTP edge shared by every route: JSON errors, auth, body limits, metrics, health.

Errors always have the shape ``{"error": {"code", "message", "field"?}}``; bad input is a 4xx
naming the bad field, never a 500.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from store import sessions
from store.mongo import Doc, Store

log = logging.getLogger("omnihub.api")

REQUESTS = Counter("omnihub_api_requests_total", "API requests", ["route", "status"])
LATENCY = Histogram(
    "omnihub_api_request_seconds",
    "API request latency",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STORE: web.AppKey[Store] = web.AppKey("store", Store)
API_TOKEN: web.AppKey[str] = web.AppKey("api_token", str)
PRINCIPAL_TTL = 5.0  # seconds an agent's principal is used without reading the store again
PRINCIPALS_MAX = 10_000
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_default)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if field:
        err["field"] = field
    return json_response({"error": err}, status)


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None


# ---------------------------------------------------------------------------- auth
Role = Literal["agent", "supervisor", "admin"]
_RANK: dict[str, int] = {"agent": 0, "supervisor": 1, "admin": 2}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a system (the API token; acts as admin) or a logged-in agent."""

    kind: Literal["system", "agent"]
    agent_id: str | None = None
    name: str | None = None
    role: Role = "agent"  # the least; authenticate() gives the API token "admin"
    teams: tuple[str, ...] = ()
    session: str | None = None  # hash of the session token (for logout)

    def at_least(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    # browsers cannot set headers on a WebSocket: accept ?token= there only
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return request.query.get("token") or None
    return None


# who made the request, set by the edge middleware for every non-public route
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


class Principals:
    """Agents' principals by session-token digest, each kept for ``PRINCIPAL_TTL`` seconds:
    a console makes several calls per action, each would read the session and the agent.
    Logout and changes to an agent forget theirs at once in this process (see
    :func:`forget_sessions`); another API process notices within the TTL."""

    def __init__(self) -> None:
        self._by_digest: dict[str, tuple[float, Principal]] = {}

    def get(self, digest: str) -> Principal | None:
        hit = self._by_digest.get(digest)
        if hit is None or hit[0] < time.monotonic():
            self._by_digest.pop(digest, None)
            return None
        return hit[1]

    def put(self, digest: str, principal: Principal, left: float) -> None:
        """Keep ``principal`` for the TTL, or the ``left`` seconds its session has if fewer."""
        if len(self._by_digest) >= PRINCIPALS_MAX:
            self._by_digest.clear()
        self._by_digest[digest] = (time.monotonic() + min(PRINCIPAL_TTL, left), principal)

    def forget(self, *, digest: str | None = None, agent_id: str | None = None) -> None:
        if digest is not None:
            self._by_digest.pop(digest, None)
        if agent_id is not None:
            for key in [k for k, (_, p) in self._by_digest.items() if p.agent_id == agent_id]:
                del self._by_digest[key]


_principals: weakref.WeakKeyDictionary[web.Application, Principals] = weakref.WeakKeyDictionary()


def principals(app: web.Application) -> Principals:
    """The principal cache of one application (made on first use)."""
    found = _principals.get(app)
    if found is None:
        found = _principals[app] = Principals()
    return found


def forget_sessions(
    request: web.Request, *, digest: str | None = None, agent_id: str | None = None
) -> None:
    """After a logout (``digest``) or a change to an agent (``agent_id``): no cached principal
    of theirs is used again."""
    principals(request.app).forget(digest=digest, agent_id=agent_id)


async def authenticate(request: web.Request) -> Principal:
    token = bearer(request)
    if token is None:
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer …)")
    if hmac.compare_digest(token.encode(), request.app[API_TOKEN].encode()):
        return Principal("system", role="admin")
    store = request.app[STORE]
    digest = hash_token(token)
    cache = principals(request.app)
    known = cache.get(digest)
    if known is not None:
        return known
    now = datetime.now(UTC)
    session = await sessions.valid(store, digest, now)
    if session is None:
        raise ApiError(401, "unauthorized", "invalid or expired token; log in again")
    doc = await store.agents.find_one(
        {"_id": session["agent_id"]}, {"name": 1, "active": 1, "role": 1, "teams": 1}
    )
    if doc is None or not doc.get("active", True):
        raise ApiError(401, "unauthorized", "this agent is deactivated")
    role: Role = doc["role"] if doc.get("role") in _RANK else "agent"
    principal = Principal(
        "agent", str(doc["_id"]), doc.get("name"), role, tuple(doc.get("teams") or ()), digest
    )
    expires = session.get("expires_at")
    left = (expires - now).total_seconds() if isinstance(expires, datetime) else 0.0
    cache.put(digest, principal, left)
    return principal


def require_system(p: Principal) -> None:
    if p.kind != "system":
        raise ApiError(403, "forbidden", "this needs the API token of a system or admin")


def require_agent(p: Principal) -> str:
    if p.kind != "agent" or p.agent_id is None:
        raise ApiError(403, "forbidden", "this needs an agent's token")
    return p.agent_id


def require_role(p: Principal, role: Role) -> Principal:
    """At least ``role`` (agent < supervisor < admin); the API token counts as admin."""
    if not p.at_least(role):
        raise ApiError(403, "forbidden", f"this needs the {role} role")
    return p


# login is how an agent gets a token, so it cannot need one; the console's static files are
# the page that logs in (they carry no data: everything the console shows comes through the
# API). Decided on the route the router matched, never on the raw path ("/console/../api").
PUBLIC = {"/healthz", "/metrics", "/api/v1/agents/login", "/", "/console"}
PUBLIC_PREFIXES = ("/console/",)


def is_public(route: str) -> bool:
    """``route``: the canonical pattern of the matched route."""
    return route in PUBLIC or route.startswith(PUBLIC_PREFIXES)


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        if not is_public(route) and request.match_info.http_exception is None:
            request[PRINCIPAL] = await authenticate(request)
        response = await handler(request)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.status
        return error_response(exc.status, exc.code, exc.message, exc.field)
    except web.HTTPRequestEntityTooLarge:
        status = 413
        limit = request.app[MAX_BODY]
        return error_response(413, "too_large", f"request body is larger than {limit} bytes")
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("api.error route=%s", route)
        return error_response(500, "internal", "internal error; see the service log")
    finally:
        REQUESTS.labels(route, str(status)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - started)


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except Exception as exc:  # report, do not crash the probe
        return json_response({"status": "degraded", "service": "api", "mongo": str(exc)}, 503)
    return json_response({"status": "ok", "service": "api"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


# timeline pages (a customer's, a conversation's context) share one cursor: the last item's
# time and id, so a page of one can be continued in the other
def encode_cursor(doc: Doc) -> str:
    raw = f"{doc['occurred_at'].isoformat()}|{doc['_id']}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, _, last = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), last
    except (ValueError, UnicodeDecodeError):
        raise ApiError(
            400, "invalid_field", "before: not a cursor from this API", "before"
        ) from None
