"""Agent REST + WebSocket: login, agents and teams (admins), presence, offers, conversation
actions. Conversation reads and the full context live in router/context.py.

Auth: the API token (systems; acts as admin) or an agent's session token from
``POST /api/v1/agents/login``. Roles: agent < supervisor < admin.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from aiokafka.errors import KafkaError
from pymongo.errors import DuplicateKeyError

from hub.web import (
    STORE,
    ApiError,
    Principal,
    forget_sessions,
    json_response,
    principal,
    read_json,
    require_agent,
    require_role,
)
from pipeline.contract import Channel, utcnow
from router import actions, auth
from router import context as conv_api
from router.context import ROUTER
from router.service import Router
from router.sockets import send_json
from router.views import public
from store import agents, offers, sessions, teams
from store.agents import ROLES
from store.mongo import Doc

__all__ = ["ROUTER", "public", "routes"]

CHANNELS: tuple[str, ...] = Channel.__args__  # type: ignore[attr-defined]
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_CAPACITY = 100
MAX_TEXT = 100_000


# ---------------------------------------------------------------------------- body checks
def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_field", "body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str, *, required: bool = False, max_len: int = 200) -> Any:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ApiError(400, "invalid_field", f"{key}: a non-empty string of ≤ {max_len} chars", key)
    return value


def _strings(body: dict[str, Any], key: str, max_items: int = 50) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > max_items
        or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value)
    ):
        raise ApiError(
            400, "invalid_field", f"{key}: a list of ≤ {max_items} strings of ≤ 64 chars", key
        )
    return sorted(set(value))


def _capacity(body: dict[str, Any]) -> dict[str, int] | None:
    value = body.get("capacity")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_field", "capacity: an object {channel: count}", "capacity")
    for ch, n in value.items():
        if ch not in CHANNELS:
            raise ApiError(
                400, "invalid_field", f"capacity: unknown channel {ch!r}", f"capacity.{ch}"
            )
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_CAPACITY:
            raise ApiError(
                400, "invalid_field", f"capacity.{ch}: 0 to {MAX_CAPACITY}", f"capacity.{ch}"
            )
    return dict(value)


def _role(body: dict[str, Any], p: Principal) -> str | None:
    role = body.get("role")
    if role is None:
        return None
    if role not in ROLES:
        raise ApiError(400, "invalid_field", f"role: one of {', '.join(ROLES)}", "role")
    if role != "agent" and not p.at_least("admin"):
        raise ApiError(403, "forbidden", "only an admin can grant the supervisor or admin role")
    return str(role)


async def _teams_exist(request: web.Request, ids: list[str] | None) -> None:
    if ids and (missing := await teams.missing(request.app[STORE], ids)):
        raise ApiError(400, "invalid_field", f"teams: unknown team {missing[0]!r}", "teams")


def _routing(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """An unreachable broker is a 503 (the router's own errors are API errors already)."""

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except KafkaError as exc:
            raise ApiError(503, "unavailable", f"the event log did not accept it ({exc}); "
                           "retry later") from None

    return wrapped


# ---------------------------------------------------------------------------- login
async def login(request: web.Request) -> web.Response:
    body = _object(await read_json(request))
    email = _text(body, "email", required=True, max_len=320)
    password = body.get("password")
    if not isinstance(password, str) or not password or len(password) > auth.MAX_PASSWORD:
        raise ApiError(400, "invalid_field", "password: required", "password")
    router = request.app[ROUTER]
    try:
        token, agent, expires = await auth.login(
            request.app[STORE], email, password, utcnow(), router.config.session_ttl
        )
    except auth.LoginFailed:
        raise ApiError(401, "invalid_credentials", "wrong email or password") from None
    return json_response({"token": token, "expires_at": expires, "agent": public(agent)})


async def logout(request: web.Request) -> web.Response:
    p = principal(request)
    require_agent(p)
    if p.session:
        await sessions.delete(request.app[STORE], p.session)
        forget_sessions(request, digest=p.session)
    return json_response({"status": "logged_out"})


# ---------------------------------------------------------------------------- agents
async def create_agent(request: web.Request) -> web.Response:
    p = require_role(principal(request), "supervisor")
    body = _object(await read_json(request))
    name = _text(body, "name", required=True).strip()
    email = _text(body, "email", required=True, max_len=320).strip().casefold()
    if not EMAIL.match(email):
        raise ApiError(400, "invalid_field", "email: not an email address", "email")
    try:
        password = auth.check_password_rules(body.get("password"))
    except ValueError as exc:
        raise ApiError(400, "invalid_field", f"password: {exc}", "password") from None
    role = _role(body, p) or "agent"
    team_ids = _strings(body, "teams") or []
    await _teams_exist(request, team_ids)
    config = request.app[ROUTER].config
    skills = _strings(body, "skills")
    now = utcnow()
    doc = {
        "_id": str(uuid.uuid4()),
        "name": name,
        "email": email,
        "password_hash": auth.hash_password(password),
        "role": role,
        "active": True,
        "status": "offline",
        "seen_at": None,
        "skills": sorted(config.default_agent_skills) if skills is None else skills,
        "teams": team_ids,
        "capacity": {ch: 0 for ch in CHANNELS} | config.default_capacity | (_capacity(body) or {}),
        "holds": {ch: [] for ch in CHANNELS},
        "last_offered_at": None,
        "created_at": now,
        "updated_at": now,
    }
    try:
        await agents.create(request.app[STORE], doc)
    except DuplicateKeyError:
        raise ApiError(409, "conflict", "an agent with this email exists", "email") from None
    return json_response(public(doc), 201)


async def list_agents(request: web.Request) -> web.Response:
    require_role(principal(request), "supervisor")
    docs = await agents.list_all(request.app[STORE])
    return json_response({"agents": [public(d) for d in docs]})


async def directory(request: web.Request) -> web.Response:
    """Colleagues any agent may see (to transfer to them, to name who has a conversation):
    id, name, status and teams of active agents; no emails, capacity or load."""
    principal(request)
    docs = await agents.list_all(request.app[STORE])
    people = [
        {
            "id": d["_id"],
            "name": d.get("name"),
            "status": d.get("status", "offline"),
            "teams": d.get("teams") or [],
        }
        for d in docs
        if d.get("active", True)
    ]
    return json_response({"agents": people})


async def me(request: web.Request) -> web.Response:
    agent_id = require_agent(principal(request))
    return json_response(public(await agents.get(request.app[STORE], agent_id)))


async def update_agent(request: web.Request) -> web.Response:
    p = require_role(principal(request), "supervisor")
    store = request.app[STORE]
    agent_id = request.match_info["agent_id"]
    current = await agents.get(store, agent_id)
    if current is None:
        raise ApiError(404, "not_found", "agent not found")
    if current.get("role", "agent") != "agent" and not p.at_least("admin"):
        raise ApiError(403, "forbidden", "only an admin can change a supervisor or admin")
    body = _object(await read_json(request))
    fields: Doc = {}
    if "name" in body:
        fields["name"] = _text(body, "name", required=True).strip()
    if (role := _role(body, p)) is not None:
        fields["role"] = role
    if (skills := _strings(body, "skills")) is not None:
        fields["skills"] = skills
    if (team_ids := _strings(body, "teams")) is not None:
        await _teams_exist(request, team_ids)
        fields["teams"] = team_ids
    if (capacity := _capacity(body)) is not None:
        fields["capacity"] = (current.get("capacity") or {}) | capacity
        for ch in capacity:  # a channel added later needs its (empty) holds list
            if ch not in (current.get("holds") or {}):
                fields[f"holds.{ch}"] = []
    if "password" in body:
        try:
            fields["password_hash"] = auth.hash_password(
                auth.check_password_rules(body["password"])
            )
        except ValueError as exc:
            raise ApiError(400, "invalid_field", f"password: {exc}", "password") from None
    if "active" in body:
        if not isinstance(body["active"], bool):
            raise ApiError(400, "invalid_field", "active: true or false", "active")
        fields["active"] = body["active"]
    if not fields:
        raise ApiError(400, "invalid_field", "nothing to change")
    fields["updated_at"] = utcnow()
    doc = await agents.update(store, agent_id, fields)
    forget_sessions(request, agent_id=agent_id)  # role, teams, active: the next call reads them
    router = request.app[ROUTER]
    if fields.get("active") is False or "password_hash" in fields:
        await sessions.delete_for_agent(store, agent_id)  # old logins end
    if fields.get("active") is False:
        await router.set_presence(agent_id, "offline")
    elif {"skills", "teams", "capacity"} & set(fields):
        router.spawn(router.drain())
    return json_response(public(doc))


async def presence(request: web.Request) -> web.Response:
    """Set online/away/offline; also the heartbeat of an agent without a WebSocket."""
    agent_id = require_agent(principal(request))
    body = _object(await read_json(request))
    status = body.get("status")
    if status not in agents.STATUSES:
        raise ApiError(
            400, "invalid_field", f"status: one of {', '.join(agents.STATUSES)}", "status"
        )
    await _routing(request.app[ROUTER].set_presence)(agent_id, status)
    return json_response(public(await agents.get(request.app[STORE], agent_id)))


# ---------------------------------------------------------------------------- teams
async def create_team(request: web.Request) -> web.Response:
    require_role(principal(request), "admin")
    body = _object(await read_json(request))
    team_id = _text(body, "id", required=True, max_len=64)
    if not SLUG.match(team_id):
        raise ApiError(400, "invalid_field", "id: lower-case letters, digits, - and _", "id")
    doc = {
        "_id": team_id,
        "name": _text(body, "name") or team_id,
        "description": _text(body, "description", max_len=2000),
        "created_at": utcnow(),
    }
    try:
        await teams.create(request.app[STORE], doc)
    except DuplicateKeyError:
        raise ApiError(409, "conflict", "a team with this id exists", "id") from None
    return json_response(public(doc), 201)


async def list_teams(request: web.Request) -> web.Response:
    return json_response({"teams": [public(t) for t in await teams.list_all(request.app[STORE])]})


# ---------------------------------------------------------------------------- offers
async def list_offers(request: web.Request) -> web.Response:
    agent_id = require_agent(principal(request))
    router = request.app[ROUTER]
    pending = await offers.pending_for(request.app[STORE], agent_id)
    return json_response({"offers": await router.describe_many(pending)})


async def accept_offer(request: web.Request) -> web.Response:
    agent_id = require_agent(principal(request))
    conv = await _routing(request.app[ROUTER].accept)(agent_id, request.match_info["offer_id"])
    return json_response({"conversation": public(conv)})


async def decline_offer(request: web.Request) -> web.Response:
    agent_id = require_agent(principal(request))
    await _routing(request.app[ROUTER].decline)(agent_id, request.match_info["offer_id"])
    return json_response({"status": "declined"})


async def stream(request: web.Request) -> web.WebSocketResponse:
    """Pushes offers, new messages on the agent's conversations and SLA alerts. The agent is
    online while a socket is open; send ``{"type":"presence","status":"away"}`` to pause."""
    p = principal(request)
    agent_id = require_agent(p)
    ws = web.WebSocketResponse(heartbeat=20.0)
    await ws.prepare(request)
    router: Router = request.app[ROUTER]
    await send_json(ws, {"type": "hello", "agent_id": agent_id})
    await router.connected(agent_id, ws, p.role, p.teams)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _on_socket_message(router, agent_id, ws, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        await asyncio.shield(router.disconnected(agent_id, ws))
    return ws


async def _on_socket_message(
    router: Router, agent_id: str, ws: web.WebSocketResponse, data: str
) -> None:
    if data == "ping":
        await ws.send_str('{"type":"pong"}')
        return
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        await send_json(ws, {"type": "error", "message": "send JSON or ping"})
        return
    kind = msg.get("type") if isinstance(msg, dict) else None
    if kind == "ping":
        await send_json(ws, {"type": "pong"})
    elif kind == "presence" and msg.get("status") in ("online", "away"):
        await router.set_presence(agent_id, msg["status"])
        await send_json(ws, {"type": "presence", "status": msg["status"]})
    elif kind == "typing":
        await _socket_typing(router, agent_id, ws, msg)
    else:
        await send_json(ws, {"type": "error", "message": "unknown message type"})


async def _socket_typing(
    router: Router, agent_id: str, ws: web.WebSocketResponse, msg: dict[str, Any]
) -> None:
    """``{"type":"typing","conversation_id":…,"state":"start"|"stop"}`` from an agent."""
    conv_id, state = msg.get("conversation_id"), msg.get("state", "start")
    if not isinstance(conv_id, str) or state not in ("start", "stop"):
        await send_json(ws, {"type": "error", "message": "typing: conversation_id and state "
                             "('start' or 'stop') required"})
        return
    doc = await router.store.agents.find_one({"_id": agent_id}, {"name": 1, "role": 1, "teams": 1})
    role = (doc or {}).get("role", "agent")
    p = Principal("agent", agent_id, (doc or {}).get("name"), role if role in ROLES else "agent",
                  tuple((doc or {}).get("teams") or ()))
    try:
        await actions.typing(router, p, conv_id, state)
    except ApiError as exc:
        await send_json(ws, {"type": "error", "message": exc.message, "code": exc.code})
    except KafkaError:
        pass  # a typing signal is not worth an error: the next one may pass


# ---------------------------------------------------------------------------- actions
async def typing(request: web.Request) -> web.Response:
    body = _object(await read_json(request))
    state = body.get("state", "start")
    if state not in ("start", "stop"):
        raise ApiError(400, "invalid_field", "state: 'start' or 'stop'", "state")
    sent = await _routing(actions.typing)(
        request.app[ROUTER], principal(request), request.match_info["conversation_id"], state
    )
    return json_response({"sent": sent}, 202)


async def reply(request: web.Request) -> web.Response:
    body = _object(await read_json(request))
    text = _text(body, "text", required=True, max_len=MAX_TEXT)
    out = await _routing(actions.reply)(
        request.app[ROUTER],
        principal(request),
        request.match_info["conversation_id"],
        text,
        subject=_text(body, "subject", max_len=2048),
        html=_text(body, "html", max_len=MAX_TEXT * 5),
        client_id=_text(body, "client_id", max_len=200),
    )
    return json_response(out, 202)


async def resolve(request: web.Request) -> web.Response:
    conv = await _routing(actions.resolve)(
        request.app[ROUTER], principal(request), request.match_info["conversation_id"]
    )
    return json_response(public(conv))


async def reopen(request: web.Request) -> web.Response:
    conv = await _routing(actions.reopen)(
        request.app[ROUTER], principal(request), request.match_info["conversation_id"]
    )
    return json_response(public(conv))


async def transfer(request: web.Request) -> web.Response:
    body = _object(await read_json(request))
    agent_id = _text(body, "agent_id", max_len=64)
    team_id = _text(body, "team_id", max_len=64)
    if (agent_id is None) == (team_id is None):
        raise ApiError(400, "invalid_field", "give exactly one of agent_id and team_id", "agent_id")
    conv = await _routing(actions.transfer)(
        request.app[ROUTER],
        principal(request),
        request.match_info["conversation_id"],
        agent_id=agent_id,
        team_id=team_id,
        note=_text(body, "note", max_len=MAX_TEXT),
    )
    return json_response(public(conv))


async def add_note(request: web.Request) -> web.Response:
    body = _object(await read_json(request))
    note = await _routing(actions.add_note)(
        request.app[ROUTER],
        principal(request),
        request.match_info["conversation_id"],
        _text(body, "text", required=True, max_len=MAX_TEXT),
    )
    return json_response(public(note), 201)


def routes() -> list[web.RouteDef]:
    conv = "/api/v1/conversations/{conversation_id}"
    return [
        web.post("/api/v1/agents/login", login),
        web.post("/api/v1/agents/logout", logout),
        web.post("/api/v1/agents", create_agent),
        web.get("/api/v1/agents", list_agents),
        web.get("/api/v1/agents/me", me),
        web.get("/api/v1/agents/directory", directory),
        web.post("/api/v1/agents/me/presence", presence),
        web.get("/api/v1/agents/stream", stream),
        web.get("/api/v1/agents/offers", list_offers),
        web.post("/api/v1/agents/offers/{offer_id}/accept", accept_offer),
        web.post("/api/v1/agents/offers/{offer_id}/decline", decline_offer),
        web.patch("/api/v1/agents/{agent_id}", update_agent),
        web.post("/api/v1/teams", create_team),
        web.get("/api/v1/teams", list_teams),
        *conv_api.routes(),
        web.post(f"{conv}/reply", reply),
        web.post(f"{conv}/resolve", resolve),
        web.post(f"{conv}/reopen", reopen),
        web.post(f"{conv}/transfer", transfer),
        web.post(f"{conv}/notes", add_note),
        web.post(f"{conv}/typing", typing),
    ]
