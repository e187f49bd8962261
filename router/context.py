"""Conversation reads: one conversation, lists scoped by role, and the full context an agent
needs in one call (customer, identifiers, cross-channel timeline, earlier conversations with
outcome and agent, notes, open signals, merge suggestions)."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import quote

from aiohttp import web

from hub.web import STORE, ApiError, decode_cursor, encode_cursor, json_response, principal
from router import actions
from router.service import Router
from router.views import public
from store import blobs, conversations, customers, identities, interactions, notes, offers
from store.mongo import Doc, Store

try:  # the identity issue provides merge suggestions
    from store import suggestions as _suggestions
except ImportError:  # pragma: no cover - depends on what is installed beside the router
    _suggestions = None  # type: ignore[assignment]

ROUTER: web.AppKey[Router] = web.AppKey("router", Router)
MAX_LIMIT = 200
SCOPES = ("mine", "offered", "queue", "all")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _limit(request: web.Request, default: int = 50) -> int:
    try:
        limit = int(request.query.get("limit", str(default)))
    except ValueError:
        raise ApiError(400, "invalid_field", "limit: an integer", "limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "invalid_field", f"limit: between 1 and {MAX_LIMIT}", "limit")
    return limit


async def _visible(request: web.Request) -> Doc:
    return await actions.visible(
        request.app[ROUTER], principal(request), request.match_info["conversation_id"]
    )


async def get_conversation(request: web.Request) -> web.Response:
    conv = await _visible(request)
    await conversations.with_activity(request.app[STORE], [conv])
    return json_response(public(conv))


async def list_conversations(request: web.Request) -> web.Response:
    """``scope``: mine (assigned to me, open), offered (pending offers to me), queue (my teams'
    waiting conversations; supervisors: every waiting one), all (supervisors: filter by
    ``state``, ``assignee``, ``team``)."""
    p = principal(request)
    scope = request.query.get("scope", "mine" if p.agent_id else "all")
    if scope not in SCOPES:
        raise ApiError(400, "invalid_field", f"scope: one of {', '.join(SCOPES)}", "scope")
    limit = _limit(request)
    store = request.app[STORE]
    query: Doc
    if scope == "mine":
        query = {"assignee": p.agent_id, "active": True}
    elif scope == "offered":
        # found through the agent's pending offers (their by_agent index): a filter led by
        # offer_agent, which no index starts with, is planned on `active` by SecantusDB and
        # reads every active conversation (measured: 300 ms at 5,000)
        pending = await offers.pending_for(store, p.agent_id)
        query = {
            "_id": {"$in": [o["conversation_id"] for o in pending]},
            "offer_agent": p.agent_id,
            "active": True,
        }
    elif scope == "queue":
        query = {"active": True, "assignee": None}
        if not p.at_least("supervisor"):
            query["team"] = {"$in": list(p.teams)}
    else:
        if not p.at_least("supervisor"):
            raise ApiError(403, "forbidden", "scope=all needs the supervisor role")
        query = {}
        for key in ("state", "assignee", "team", "channel", "customer_id"):
            if key in request.query:
                query[key] = request.query[key]
    docs = await conversations.listing(store, query, limit)
    # the customer's name for each row (a list of ids means nothing to an agent)
    ids = list({d["customer_id"] for d in docs})
    names = {
        c["_id"]: c.get("display_name")
        async for c in store.customers.find({"_id": {"$in": ids}}, {"display_name": 1})
    }
    items = []
    for d in docs:
        item = public(d) or {}
        item["customer_name"] = names.get(d["customer_id"])
        items.append(item)
    return json_response({"conversations": items})


async def _signals(store: Store, customer_ids: list[str]) -> list[Doc]:
    # no signals collection yet (the signals agent adds it); open = not closed
    cursor = (
        store.db["signals"]
        .find({"customer_id": {"$in": customer_ids}, "state": {"$nin": ["closed", "resolved"]}})
        .sort("raised_at", -1)
        .limit(50)
    )
    return [d async for d in cursor]


async def _merge_suggestions(store: Store, customer_id: str) -> list[Doc]:
    if _suggestions is None:
        return []
    return list(await _suggestions.for_customer(store, [customer_id]))


async def conversation_context(request: web.Request) -> web.Response:
    """Everything an agent needs in one call; ``limit``/``before`` page the timeline."""
    conv = await _visible(request)
    store = request.app[STORE]
    await conversations.with_activity(store, [conv])
    limit = _limit(request)
    before = request.query.get("before")
    cursor = decode_cursor(before) if before else None
    cust = await customers.get(store, conv["customer_id"])
    cid = cust["_id"] if cust else conv["customer_id"]
    ids = [cid] if cid == conv["customer_id"] else [cid, conv["customer_id"]]
    idents, page, earlier, conv_notes, signals, suggestions = await asyncio.gather(
        identities.of_customer(store, cid),
        interactions.timeline(store, ids, limit=limit + 1, before=cursor),
        conversations.of_customer(store, ids, limit=21),
        notes.of_conversation(store, conv["_id"]),
        _signals(store, ids),
        _merge_suggestions(store, cid),
    )
    earlier = [e for e in earlier if e["_id"] != conv["_id"]][:20]
    agent_ids = {x for e in [conv, *earlier] for x in (e.get("assignee"), e.get("last_agent")) if x}
    names = {
        d["_id"]: d.get("name")
        async for d in store.agents.find({"_id": {"$in": list(agent_ids)}}, {"name": 1})
    }
    more = len(page) > limit
    page = page[:limit]
    customer: dict[str, Any] | None = public(cust)
    if customer is not None:
        customer["identifiers"] = idents
    return json_response(
        {
            "conversation": public(conv),
            "customer": customer,
            "timeline": [public(i) for i in page],
            "timeline_next": encode_cursor(page[-1]) if more and page else None,
            "earlier_conversations": [
                {
                    "id": e["_id"],
                    "channel": e.get("channel"),
                    "state": e.get("state"),
                    "opened_at": e.get("opened_at"),
                    "resolved_at": e.get("resolved_at"),
                    "agent_id": e.get("assignee") or e.get("last_agent"),
                    "agent_name": names.get(e.get("assignee") or e.get("last_agent") or ""),
                    "first_response_at": e.get("first_response_at"),
                    "priority": e.get("priority", 0),
                }
                for e in earlier
            ],
            "notes": [public(n) for n in conv_notes],
            "signals": [public(s) for s in signals],
            "merge_suggestions": [public(s) for s in suggestions],
        }
    )


async def list_notes(request: web.Request) -> web.Response:
    conv = await _visible(request)
    docs = await notes.of_conversation(request.app[STORE], conv["_id"])
    return json_response({"notes": [public(d) for d in docs]})


async def attachment(request: web.Request) -> web.Response:
    """The bytes of an attachment on the customer's timeline, for whoever may see the
    conversation. Always a download (``attachment``, octet-stream, sandboxed): an HTML or SVG
    file from a customer never runs in the console's origin."""
    conv = await _visible(request)
    sha = request.match_info["sha256"]
    if not SHA256.match(sha):
        raise ApiError(400, "invalid_field", "sha256: 64 lower-case hex digits", "sha256")
    store = request.app[STORE]
    cust = await customers.get(store, conv["customer_id"])
    ids = list({conv["customer_id"], cust["_id"] if cust else conv["customer_id"]})
    doc = await store.interactions.find_one(
        {"customer_id": {"$in": ids}, "attachments.sha256": sha}, {"attachments": 1}
    )
    att = next((a for a in (doc or {}).get("attachments") or [] if a.get("sha256") == sha), None)
    if att is None:
        raise ApiError(404, "not_found", "attachment not found")
    if att.get("omitted"):
        raise ApiError(404, "not_stored", f"not stored on its own: {att['omitted']}")
    data = await blobs.get(store, att["ref"])
    if data is None:
        raise ApiError(404, "not_found", "attachment bytes not found")
    name = str(att.get("name") or "attachment")
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100] or "attachment"
    return web.Response(
        body=data,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{fallback}"; '
            f"filename*=UTF-8''{quote(name[:200], safe='')}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        },
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/conversations", list_conversations),
        web.get("/api/v1/conversations/{conversation_id}", get_conversation),
        web.get("/api/v1/conversations/{conversation_id}/context", conversation_context),
        web.get("/api/v1/conversations/{conversation_id}/notes", list_notes),
        web.get("/api/v1/conversations/{conversation_id}/attachments/{sha256}", attachment),
    ]
