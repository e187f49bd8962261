"""Agent REST + WebSocket and the conversation read API.

Agents authenticate with their own token (issued once at creation); systems and admins with
the API token. An agent sees only conversations offered or assigned to them.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from hub.web import (
    STORE,
    ApiError,
    Principal,
    hash_token,
    json_response,
    not_found,
    principal,
    read_json,
    require_agent,
    require_system,
)
from pipeline.contract import utcnow
from router.service import Router, RoutingError, send_json
from store import agents, conversations, customers, identities, interactions, offers
from store.mongo import Doc

ROUTER: web.AppKey[Router] = web.AppKey("router", Router)


def public(doc: Doc | None) -> Doc | None:
    """A stored document as the API shows it: ``_id`` becomes ``id``."""
    if doc is None:
        return None
    out = {"id": doc["_id"], **{k: v for k, v in doc.items() if k != "_id"}}
    out.pop("token_hash", None)
    return out


# ---------------------------------------------------------------------------- agents
async def create_agent(request: web.Request) -> web.Response:
    require_system(principal(request))
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_field", "body must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ApiError(400, "invalid_field", "name: a non-empty string of ≤ 200 chars", "name")
    email = body.get("email")
    if email is not None and (not isinstance(email, str) or "@" not in email):
        raise ApiError(400, "invalid_field", "email: not an email address", "email")
    token = secrets.token_urlsafe(32)
    now = utcnow()
    doc = {
        "_id": str(uuid.uuid4()),
        "name": name.strip(),
        "email": email,
        "token_hash": hash_token(token),
        "active": True,
        "online": False,
        "last_offered_at": None,
        "created_at": now,
    }
    await agents.create(request.app[STORE], doc)
    # the token is shown once; only its hash is stored
    return json_response({**(public(doc) or {}), "token": token}, 201)


async def list_agents(request: web.Request) -> web.Response:
    require_system(principal(request))
    docs = await agents.list_all(request.app[STORE])
    return json_response({"agents": [public(d) for d in docs]})


async def me(request: web.Request) -> web.Response:
    agent_id = require_agent(principal(request))
    return json_response(public(await agents.get(request.app[STORE], agent_id)))


async def list_offers(request: web.Request) -> web.Response:
    agent_id = require_agent(principal(request))
    router = request.app[ROUTER]
    pending = await offers.pending_for(request.app[STORE], agent_id)
    return json_response({"offers": [await router.describe(o) for o in pending]})


async def accept_offer(request: web.Request) -> web.Response:
    agent_id = require_agent(principal(request))
    try:
        conv = await request.app[ROUTER].accept(agent_id, request.match_info["offer_id"])
    except RoutingError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    return json_response({"conversation": public(conv)})


async def decline_offer(request: web.Request) -> web.Response:
    agent_id = require_agent(principal(request))
    try:
        await request.app[ROUTER].decline(agent_id, request.match_info["offer_id"])
    except RoutingError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    return json_response({"status": "declined"})


async def stream(request: web.Request) -> web.WebSocketResponse:
    """Pushes offers to the agent; the agent is online while one socket is open."""
    agent_id = require_agent(principal(request))
    ws = web.WebSocketResponse(heartbeat=20.0)
    await ws.prepare(request)
    router = request.app[ROUTER]
    await send_json(ws, {"type": "hello", "agent_id": agent_id})
    await router.connected(agent_id, ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "ping":
                await ws.send_str('{"type":"pong"}')
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        await asyncio.shield(router.disconnected(agent_id, ws))
    return ws


# ---------------------------------------------------------------------------- conversations
async def _visible_conversation(request: web.Request) -> Doc:
    p: Principal = principal(request)
    store = request.app[STORE]
    conv = await conversations.get(store, request.match_info["conversation_id"])
    if conv is None:
        raise not_found("conversation")
    if p.kind == "agent" and conv.get("assignee") != p.agent_id:
        offer = await store.offers.find_one(
            {"conversation_id": conv["_id"], "agent_id": p.agent_id, "state": "pending"}
        )
        if offer is None:
            raise ApiError(403, "forbidden", "this conversation is not offered or assigned to you")
    return conv


async def get_conversation(request: web.Request) -> web.Response:
    conv = await _visible_conversation(request)
    return json_response(public(conv))


async def conversation_context(request: web.Request) -> web.Response:
    """Everything an agent needs in one call: customer, identifiers, timeline, history."""
    conv = await _visible_conversation(request)
    store = request.app[STORE]
    cust = await customers.get(store, conv["customer_id"])
    cid = cust["_id"] if cust else conv["customer_id"]
    idents, timeline, earlier = await asyncio.gather(
        identities.of_customer(store, cid),
        interactions.timeline(store, [cid], limit=50),
        conversations.of_customer(store, [cid], limit=20),
    )
    customer: dict[str, Any] | None = public(cust)
    if customer is not None:
        customer["identifiers"] = idents
    return json_response(
        {
            "conversation": public(conv),
            "customer": customer,
            "timeline": [public(i) for i in timeline],
            "earlier_conversations": [public(e) for e in earlier if e["_id"] != conv["_id"]],
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/agents", create_agent),
        web.get("/api/v1/agents", list_agents),
        web.get("/api/v1/agents/me", me),
        web.get("/api/v1/agents/stream", stream),
        web.get("/api/v1/agents/offers", list_offers),
        web.post("/api/v1/agents/offers/{offer_id}/accept", accept_offer),
        web.post("/api/v1/agents/offers/{offer_id}/decline", decline_offer),
        web.get("/api/v1/conversations/{conversation_id}", get_conversation),
        web.get("/api/v1/conversations/{conversation_id}/context", conversation_context),
    ]
