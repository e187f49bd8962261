"""The agent API over real HTTP and WebSocket, on a real SecantusDB (Kafka stands in as a
recorder): login, roles, presence, offers on the socket, context, reply, notes, resolve."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hub.web import API_TOKEN, MAX_BODY, STORE, edge
from pipeline import topics
from router import api as router_api
from router.service import Router
from tests.integration.test_ingest import Recorder
from tests.integration.test_router import add_conversation

pytestmark = pytest.mark.integration

SYSTEM = {"Authorization": "Bearer system-token"}
PASSWORD = "correct horse battery"


class Api:
    def __init__(self, base: str, router: Router, pub: Recorder) -> None:
        self.base, self.router, self.pub = base, router, pub
        self.session = aiohttp.ClientSession(base_url=base)

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else SYSTEM
        async with self.session.request(method, path, headers=headers, **kw) as r:
            return r.status, await r.json()

    async def agent(self, email: str, role: str = "agent", **fields: Any) -> tuple[str, str]:
        body = {"name": email.split("@")[0], "email": email, "password": PASSWORD, "role": role}
        status, doc = await self.call("POST", "/api/v1/agents", json=body | fields)
        assert status == 201, doc
        status, login = await self.call(
            "POST", "/api/v1/agents/login", json={"email": email.upper(), "password": PASSWORD}
        )
        assert status == 200, login
        return doc["id"], login["token"]


@pytest.fixture
async def api(store: Any) -> AsyncIterator[Api]:
    pub = Recorder()
    router = Router(store, pub, offer_timeout=5)
    app = web.Application(middlewares=[edge])
    app[API_TOKEN], app[STORE], app[MAX_BODY] = "system-token", store, 1 << 20
    app[router_api.ROUTER] = router
    app.add_routes(router_api.routes())
    server = TestServer(app)
    await server.start_server()
    client = Api(str(server.make_url("")), router, pub)
    yield client
    await client.session.close()
    await router.stop()
    await server.close()


async def test_login_roles_and_logout(api: Api) -> None:
    sup_id, sup = await api.agent("boss@example.com", role="supervisor")
    status, err = await api.call(
        "POST", "/api/v1/agents/login", json={"email": "boss@example.com", "password": "nope"}
    )
    assert status == 401 and err["error"]["code"] == "invalid_credentials"
    status, err = await api.call(
        "POST", "/api/v1/agents/login", json={"email": "nobody@example.com", "password": "x" * 12}
    )
    assert status == 401
    # a supervisor manages agents but cannot mint admins
    status, _ = await api.call(
        "POST",
        "/api/v1/agents",
        sup,
        json={"name": "A", "email": "a@example.com", "password": PASSWORD, "role": "admin"},
    )
    assert status == 403
    status, agent = await api.call(
        "POST",
        "/api/v1/agents",
        sup,
        json={
            "name": "A",
            "email": "a@example.com",
            "password": PASSWORD,
            "capacity": {"webchat": 2},
            "skills": ["lang:fa"],
        },
    )
    assert status == 201 and agent["role"] == "agent" and agent["capacity"]["webchat"] == 2
    assert "password_hash" not in agent and "holds" not in agent and agent["load"]["webchat"] == 0
    status, _ = await api.call(
        "POST",
        "/api/v1/agents",
        sup,
        json={"name": "A", "email": "A@example.com", "password": PASSWORD},
    )
    assert status == 409
    status, login = await api.call(
        "POST", "/api/v1/agents/login", json={"email": "a@example.com", "password": PASSWORD}
    )
    token = login["token"]
    assert login["agent"]["id"] == agent["id"] and login["expires_at"]
    assert (await api.call("GET", "/api/v1/agents", token))[0] == 403
    assert (await api.call("GET", "/api/v1/agents", sup))[0] == 200
    assert (await api.call("POST", "/api/v1/teams", sup, json={"id": "billing"}))[0] == 403
    assert (await api.call("POST", "/api/v1/teams", json={"id": "billing"}))[0] == 201
    status, doc = await api.call(
        "PATCH", f"/api/v1/agents/{agent['id']}", sup, json={"teams": ["billing"]}
    )
    assert status == 200 and doc["teams"] == ["billing"]
    status, err = await api.call(
        "PATCH", f"/api/v1/agents/{agent['id']}", sup, json={"capacity": {"fax": 1}}
    )
    assert status == 400 and err["error"]["field"] == "capacity.fax"
    assert (await api.call("PATCH", f"/api/v1/agents/{sup_id}", sup, json={"name": "x"}))[0] == 403
    status, me = await api.call("GET", "/api/v1/agents/me", token)
    assert status == 200 and me["email"] == "a@example.com"
    assert (await api.call("POST", "/api/v1/agents/logout", token))[0] == 200
    status, err = await api.call("GET", "/api/v1/agents/me", token)
    assert status == 401 and err["error"]["code"] == "unauthorized"
    # a change of role counts from the next call, and a deactivated agent's sessions end at
    # once (though the API keeps recent sessions in memory)
    _, again = await api.call(
        "POST", "/api/v1/agents/login", json={"email": "a@example.com", "password": PASSWORD}
    )
    assert (await api.call("GET", "/api/v1/agents", again["token"]))[0] == 403
    promote = {"role": "supervisor"}
    status, _ = await api.call("PATCH", f"/api/v1/agents/{agent['id']}", json=promote)
    assert status == 200
    assert (await api.call("GET", "/api/v1/agents", again["token"]))[0] == 200
    status, _ = await api.call("PATCH", f"/api/v1/agents/{agent['id']}", json={"active": False})
    assert status == 200
    assert (await api.call("GET", "/api/v1/agents/me", again["token"]))[0] == 401


async def test_an_agent_gets_the_offer_on_the_socket_and_works_the_conversation(
    api: Api, store: Any
) -> None:
    sara, sara_token = await api.agent("sara@example.com")
    other, other_token = await api.agent("other@example.com")
    sup, sup_token = await api.agent("sup@example.com", role="supervisor")
    # only sara takes work: with two online agents the offer's tie-break (longest idle) would
    # hinge on login times a loaded machine blurs
    for token in (other_token, sup_token):
        await api.call("POST", "/api/v1/agents/me/presence", token, json={"status": "away"})
    async with api.session.ws_connect(f"/api/v1/agents/stream?token={sara_token}") as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
        await add_conversation(store, "k1", text="سلام، سفارشم کی می‌رسه؟")
        # as the conversation.opened event does (a drain may work from a queue copy read
        # just before the insert, by the drain the socket's connect started)
        await api.router.route_many(["k1"])
        offer = await ws.receive_json(timeout=5)
        assert offer["type"] == "offer" and offer["offer"]["conversation_id"] == "k1"
        assert offer["offer"]["language"] == "fa" and offer["offer"]["preview"].startswith("سلام")
        # not offered to the other agent: they cannot read it; a supervisor can
        path = "/api/v1/conversations/k1"
        assert (await api.call("GET", f"{path}/context", other_token))[0] == 403
        assert (await api.call("GET", f"{path}/context", sup_token))[0] == 200
        status, out = await api.call(
            "POST", f"/api/v1/agents/offers/{offer['offer']['id']}/accept", sara_token
        )
        assert status == 200 and out["conversation"]["assignee"] == sara
        status, ctx = await api.call("GET", f"{path}/context", sara_token)
        assert status == 200
        assert ctx["customer"] is None or "identifiers" in ctx["customer"]
        assert [i["id"] for i in ctx["timeline"]] == ["i-k1"]
        assert ctx["merge_suggestions"] == [] and ctx["signals"] == []
        status, rep = await api.call("POST", f"{path}/reply", sara_token, json={"text": "چشم"})
        assert status == 202 and rep["first_response"] is True
        pushed = await ws.receive_json(timeout=5)
        assert pushed["type"] == "reply" and pushed["text"] == "چشم"
        assert any(r.topic == topics.outbound("api") for r in api.pub.records)
        assert (await api.call("POST", f"{path}/reply", other_token, json={"text": "x"}))[0] == 403
        status, note = await api.call("POST", f"{path}/notes", sup_token, json={"text": "VIP"})
        assert status == 201
        assert (await ws.receive_json(timeout=5))["type"] == "note"
        status, mine = await api.call("GET", "/api/v1/conversations?scope=mine", sara_token)
        assert [c["id"] for c in mine["conversations"]] == ["k1"]
        assert (await api.call("GET", "/api/v1/conversations?scope=all", sara_token))[0] == 403
        status, done = await api.call("POST", f"{path}/resolve", sara_token)
        assert status == 200 and done["state"] == "resolved"
        assert (await api.call("POST", f"{path}/resolve", sara_token))[0] == 409
        status, ctx = await api.call("GET", f"{path}/context", sara_token)
        assert [n["text"] for n in ctx["notes"]] == ["VIP"]
    for _ in range(50):  # the socket closed: the agent is offline
        _, me = await api.call("GET", "/api/v1/agents/me", sara_token)
        if me["status"] == "offline":
            break
        await asyncio.sleep(0.05)
    assert me["status"] == "offline"
    del sup, other, note


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("post", "/api/v1/agents/login", {"json": []}, 400, "invalid_field"),
        ("post", "/api/v1/agents/login", {"json": {"email": "a@b.c"}}, 400, "invalid_field"),
        (
            "post",
            "/api/v1/agents",
            {"json": {"name": "x", "email": "bad", "password": "p" * 12}},
            400,
            "invalid_field",
        ),
        (
            "post",
            "/api/v1/agents",
            {"json": {"name": "x", "email": "x@y.z", "password": "short"}},
            400,
            "invalid_field",
        ),
        (
            "post",
            "/api/v1/agents",
            {"json": {"name": "x", "email": "x@y.z", "password": "p" * 12, "teams": ["nope"]}},
            400,
            "invalid_field",
        ),
        (
            "post",
            "/api/v1/agents",
            {"json": {"name": "x", "email": "x@y.z", "password": "p" * 12, "role": "god"}},
            400,
            "invalid_field",
        ),
        ("post", "/api/v1/teams", {"json": {"id": "Not A Slug"}}, 400, "invalid_field"),
        ("patch", "/api/v1/agents/nobody", {"json": {"name": "x"}}, 404, "not_found"),
        ("post", "/api/v1/agents/me/presence", {"json": {"status": "online"}}, 403, "forbidden"),
        ("get", "/api/v1/conversations/nothing/context", {}, 404, "not_found"),
        ("get", "/api/v1/conversations?scope=everything", {}, 400, "invalid_field"),
        ("get", "/api/v1/conversations?limit=0", {}, 400, "invalid_field"),
        (
            "post",
            "/api/v1/conversations/nothing/reply",
            {"json": {"text": ""}},
            400,
            "invalid_field",
        ),
        ("post", "/api/v1/conversations/nothing/reply", {"json": {"text": "hi"}}, 404, "not_found"),
        ("post", "/api/v1/conversations/nothing/transfer", {"json": {}}, 400, "invalid_field"),
        ("post", "/api/v1/conversations/nothing/reopen", {}, 404, "not_found"),
    ],
)
async def test_bad_requests_get_clear_json_errors(
    api: Api, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    got, body = await api.call(method.upper(), path, **kwargs)
    assert (got, body["error"]["code"]) == (status, code), body


async def test_context_pages_the_whole_timeline_and_refuses_a_foreign_cursor(
    api: Api, store: Any
) -> None:
    """Seven messages, two of them in the same millisecond: pages of three, followed by
    ``timeline_next``, give each message once, newest first; a cursor we did not make is a 400
    naming ``before``, not a 500."""
    from datetime import timedelta

    from pipeline import contract as c

    await add_conversation(store, "k1", minutes_ago=10)
    base = c.utcnow().replace(microsecond=0) - timedelta(minutes=5)
    stamps = [base + timedelta(seconds=s) for s in (1, 2, 3, 3, 4, 5)]
    await store.interactions.insert_many(
        [
            {
                "_id": f"i-{n}",
                "customer_id": "cust-k1",
                "conversation_id": "k1",
                "channel": "api",
                "direction": "in",
                "sender": ["api:cust-k1"],
                "source_id": f"s-{n}",
                "occurred_at": at,
                "text": f"message {n}",
            }
            for n, at in enumerate(stamps)
        ]
    )
    seen: list[str] = []
    before = None
    for _ in range(5):
        query = {"limit": "3"} | ({"before": before} if before else {})
        status, ctx = await api.call("GET", "/api/v1/conversations/k1/context", params=query)
        assert status == 200, ctx
        assert len(ctx["timeline"]) <= 3
        seen += [i["id"] for i in ctx["timeline"]]
        before = ctx["timeline_next"]
        if before is None:
            break
    assert len(seen) == len(set(seen)) == 7
    assert seen[:2] == ["i-5", "i-4"] and set(seen[2:4]) == {"i-2", "i-3"}
    assert seen[4:] == ["i-1", "i-0", "i-k1"]
    for bad in ("not-a-cursor", "%%%", "bm9waXBl"):
        status, err = await api.call(
            "GET", "/api/v1/conversations/k1/context", params={"before": bad}
        )
        assert status == 400 and err["error"]["field"] == "before", err
