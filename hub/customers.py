"""Customer read API: lookup by any raw identifier form, profile, timeline."""

from __future__ import annotations

import base64
from datetime import datetime

from aiohttp import web

from hub.web import STORE, ApiError, json_response, not_found
from router.api import public
from store import customers, identities, interactions
from unify.identifiers import InvalidIdentifier, parse_identifier

REGION: web.AppKey[str] = web.AppKey("default_region", str)
MAX_LIMIT = 200


def encode_cursor(doc: dict[str, object]) -> str:
    at = doc["occurred_at"]
    assert isinstance(at, datetime)
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{doc['_id']}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, _, last = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), last
    except (ValueError, UnicodeDecodeError):
        raise ApiError(
            400, "invalid_field", "before: not a cursor from this API", "before"
        ) from None


async def _customer(request: web.Request, customer_id: str) -> dict[str, object]:
    store = request.app[STORE]
    doc = await customers.get(store, customer_id)
    if doc is None:
        raise not_found("customer")
    out = public(doc) or {}
    out["identifiers"] = await identities.of_customer(store, doc["_id"])
    out["merges"] = []  # merge history arrives with the identity issue
    return out


async def find_customer(request: web.Request) -> web.Response:
    raw = request.query.get("identifier")
    if not raw:
        raise ApiError(
            400, "invalid_field", "identifier: required, e.g. phone:+98912…", "identifier"
        )
    try:
        ident = parse_identifier(raw, default_region=request.app[REGION])
    except InvalidIdentifier as exc:
        raise ApiError(400, "invalid_field", f"identifier: {exc}", "identifier") from None
    owner = (await identities.lookup(request.app[STORE], [ident])).get(ident)
    if owner is None:
        raise not_found(f"customer with {ident.split(':', 1)[0]} identifier")
    return json_response(await _customer(request, owner))


async def get_customer(request: web.Request) -> web.Response:
    return json_response(await _customer(request, request.match_info["customer_id"]))


async def timeline(request: web.Request) -> web.Response:
    store = request.app[STORE]
    doc = await customers.get(store, request.match_info["customer_id"])
    if doc is None:
        raise not_found("customer")
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise ApiError(400, "invalid_field", "limit: an integer", "limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "invalid_field", f"limit: between 1 and {MAX_LIMIT}", "limit")
    before = request.query.get("before")
    page = await interactions.timeline(
        store, [doc["_id"]], limit=limit + 1, before=decode_cursor(before) if before else None
    )
    more = len(page) > limit
    page = page[:limit]
    return json_response(
        {
            "customer_id": doc["_id"],
            "items": [public(i) for i in page],
            "next": encode_cursor(page[-1]) if more and page else None,
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/customers", find_customer),
        web.get("/api/v1/customers/{customer_id}", get_customer),
        web.get("/api/v1/customers/{customer_id}/timeline", timeline),
    ]
