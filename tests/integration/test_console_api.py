"""What the agent console needs from the API, over real HTTP on a real SecantusDB (Kafka stands
in as a recorder): its files with a strict policy, names in lists, the colleague directory,
attachment downloads, and live "conversation changed" / reply status frames for exactly those
who may see the conversation."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from hub.web import API_TOKEN, MAX_BODY, STORE, edge
from pipeline import contract as c
from router import actions, console
from router import api as router_api
from router.service import Router
from store import blobs, teams
from tests.integration.test_ingest import Recorder
from tests.integration.test_router import FakeSocket, add_agent, add_conversation, as_agent
from tests.integration.test_router_api import Api

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(store: Any) -> AsyncIterator[Api]:
    pub = Recorder()
    router = Router(store, pub, offer_timeout=5)
    app = web.Application(middlewares=[edge])
    app[API_TOKEN], app[STORE], app[MAX_BODY] = "system-token", store, 1 << 20
    app[router_api.ROUTER] = router
    app.add_routes(router_api.routes())
    app.add_routes(console.routes())
    server = TestServer(app)
    await server.start_server()
    client = Api(str(server.make_url("")), router, pub)
    yield client
    await client.session.close()
    await router.stop()
    await server.close()


async def raw_get(api: Api, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    """GET a path exactly as written (no client-side clean-up of ``..``)."""
    url = URL(api.base.rstrip("/") + path, encoded=True)
    async with aiohttp.ClientSession() as s, s.get(url, allow_redirects=False, **kw) as r:
        return r.status, dict(r.headers), await r.read()


async def test_console_files_come_with_a_strict_policy_and_no_token(api: Api) -> None:
    status, headers, body = await raw_get(api, "/console/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    assert b'<script type="module" src="/console/app.js"></script>' in body
    status, headers, body = await raw_get(api, "/console/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert "Content-Security-Policy" in headers and b"import" in body
    status, headers, _ = await raw_get(api, "/console/icons/email.svg")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml"
    status, headers, _ = await raw_get(api, "/")
    assert status == 302 and headers["Location"] == "/console/"


@pytest.mark.parametrize(
    "path",
    [
        "/console/nothing.js",
        "/console/../hub/web.py",
        "/console/%2e%2e/%2e%2e/pyproject.toml",
        "/console/icons/../../routes.py",
        "/console/routes.py",
        "/console/App.JS",
    ],
)
async def test_nothing_but_console_files_is_served_there(api: Api, path: str) -> None:
    status, _, body = await raw_get(api, path)
    assert status == 404, body


async def test_a_console_path_never_opens_the_api_without_a_token(api: Api) -> None:
    await add_agent(api.router.store, "a")
    for path in ("/console/../api/v1/agents", "/console/%2e%2e/api/v1/agents"):
        status, _, body = await raw_get(api, path)
        assert status in (401, 404) and b'"a@example.com"' not in body
    status, _, _ = await raw_get(api, "/api/v1/agents")
    assert status == 401


async def test_lists_carry_the_customers_names_and_keep_role_scopes(api: Api) -> None:
    store = api.router.store
    sara, sara_t = await api.agent("sara@example.com", teams=[])
    await api.call("POST", "/api/v1/teams", json={"id": "billing"})
    _, billing_t = await api.agent("bill@example.com", teams=["billing"])
    _, boss_t = await api.agent("boss@example.com", role="supervisor")
    await store.customers.insert_many(
        [
            {"_id": "cust-mine", "display_name": "علی رضایی"},
            {"_id": "cust-q", "display_name": "Jane"},
        ]
    )
    await add_conversation(store, "mine", customer_id="cust-mine", assignee=sara, state="assigned")
    await add_conversation(store, "q", customer_id="cust-q", team="billing")
    status, mine = await api.call("GET", "/api/v1/conversations?scope=mine", sara_t)
    assert status == 200
    assert [(x["id"], x["customer_name"]) for x in mine["conversations"]] == [("mine", "علی رضایی")]
    _, queue = await api.call("GET", "/api/v1/conversations?scope=queue", billing_t)
    assert [(x["id"], x["customer_name"]) for x in queue["conversations"]] == [("q", "Jane")]
    _, queue = await api.call("GET", "/api/v1/conversations?scope=queue", sara_t)
    assert queue["conversations"] == []  # not her team's queue
    status, _ = await api.call("GET", "/api/v1/conversations?scope=all", sara_t)
    assert status == 403
    _, everyone = await api.call("GET", "/api/v1/conversations?scope=all", boss_t)
    assert {x["id"] for x in everyone["conversations"]} == {"mine", "q"}

    # offered: the conversations of the agent's pending offers, and no one else's
    status, offered = await api.call("GET", "/api/v1/conversations?scope=offered", sara_t)
    assert status == 200 and offered["conversations"] == []
    bill = (await api.call("GET", "/api/v1/agents/me", billing_t))[1]["id"]
    for conv_id, agent in (("to-sara", sara), ("to-bill", bill)):
        await add_conversation(store, conv_id, customer_id="cust-q")
        conv = await store.conversations.find_one({"_id": conv_id})
        assert await api.router.make_offer(conv, agent, c.utcnow()) is not None
    _, offered = await api.call("GET", "/api/v1/conversations?scope=offered", sara_t)
    rows = [(x["id"], x["customer_name"]) for x in offered["conversations"]]
    assert rows == [("to-sara", "Jane")]
    _, offered = await api.call("GET", "/api/v1/conversations?scope=offered", billing_t)
    assert [x["id"] for x in offered["conversations"]] == ["to-bill"]


async def test_the_directory_names_colleagues_and_nothing_private(api: Api) -> None:
    sara, sara_t = await api.agent("sara@example.com")
    gone, _ = await api.agent("gone@example.com")
    await api.call("PATCH", f"/api/v1/agents/{gone}", json={"active": False})
    status, body = await api.call("GET", "/api/v1/agents/directory", sara_t)
    assert status == 200
    assert body["agents"] == [{"id": sara, "name": "sara", "status": "offline", "teams": []}]
    status, _ = await api.call("GET", "/api/v1/agents", sara_t)
    assert status == 403  # the full records stay with supervisors


async def test_attachments_download_for_whoever_may_see_the_conversation(api: Api) -> None:
    store = api.router.store
    sara, sara_t = await api.agent("sara@example.com")
    _, other_t = await api.agent("other@example.com")
    data = b"%PDF-1.4 invoice 1234"
    sha = await blobs.put(store, data)
    await add_conversation(store, "k", assignee=sara, state="assigned")
    att = {"name": "فاکتور <1>.pdf", "type": "text/html", "size": len(data), "sha256": sha}
    big = {
        "name": "video.mp4",
        "type": "video/mp4",
        "size": 9,
        "sha256": "e" * 64,
        "ref": "raw-mail-1",
        "omitted": "larger than the size limit",
    }
    await store.interactions.update_one(
        {"_id": "i-k"}, {"$set": {"attachments": [att | {"ref": sha}, big]}}
    )
    path = f"/api/v1/conversations/k/attachments/{sha}"
    async with api.session.get(path, headers={"Authorization": f"Bearer {sara_t}"}) as r:
        assert r.status == 200 and await r.read() == data
        # a download, never rendered here: not the stored type, no sniffing, sandboxed
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in r.headers["Content-Security-Policy"]
        disposition = r.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert unquote(re.search(r"filename\*=UTF-8''(\S+)", disposition).group(1)) == att["name"]  # type: ignore[union-attr]
    assert (await api.call("GET", path, other_t))[0] == 403
    status, err = await api.call("GET", f"/api/v1/conversations/k/attachments/{'e' * 64}", sara_t)
    assert status == 404 and err["error"]["code"] == "not_stored"
    status, _ = await api.call("GET", f"/api/v1/conversations/k/attachments/{'0' * 64}", sara_t)
    assert status == 404
    status, err = await api.call("GET", "/api/v1/conversations/k/attachments/nope", sara_t)
    assert status == 400 and err["error"]["field"] == "sha256"


def _recorded(conv_id: str, customer_id: str) -> bytes:
    message = c.Message(
        channel="api",
        account="api",
        source_id=f"s-{conv_id}-2",
        thread=conv_id,
        sender=[c.Identifier(kind="api", value=customer_id)],
        occurred_at=c.utcnow(),
        text="hi",
    )
    data = c.InteractionRecorded(
        interaction_id=message.event_id,
        customer_id=customer_id,
        conversation_id=conv_id,
        message=message,
    )
    return c.envelope(c.INTERACTION_RECORDED, data, id="e-" + conv_id, source="/t").to_json()


async def test_a_follow_up_reaches_its_agent_while_other_conversations_are_being_routed(
    store: Any,
) -> None:
    """Routing a batch's new conversations (a second under load) does not hold back pushes
    about conversations agents already have; the new conversation's own message is pushed
    after its pass, to the agent it was offered to."""
    router = Router(store, Recorder())
    owner, other = FakeSocket(), FakeSocket()
    router.sockets.add("owner", "agent", owner)
    router.sockets.add("a2", "agent", other)
    await add_agent(store, "a2", capacity={"api": 5})
    await add_conversation(store, "k", assignee="owner", state="assigned")
    await add_conversation(store, "n")
    opened = c.ConversationOpened(
        conversation_id="n", customer_id="cust-n", channel="api", account="api", thread="n",
        opened_at=c.utcnow(), first_interaction_id="i-n",
    )
    gate = asyncio.Event()
    route_many = router.route_many

    async def slow(ids: Any, exclude: Any = ()) -> Any:
        await gate.wait()
        return await route_many(ids, exclude)

    router.route_many = slow  # type: ignore[method-assign]
    batch = [
        c.envelope(c.CONVERSATION_OPENED, opened, id="o-n", source="/t").to_json(),
        _recorded("k", "cust-k"),
        _recorded("n", "cust-n"),
    ]
    task = asyncio.create_task(router.on_events(batch))
    for _ in range(100):
        if owner.of("message"):
            break
        await asyncio.sleep(0.05)
    assert [m["conversation_id"] for m in owner.of("message")] == ["k"]
    assert not task.done() and other.sent == []
    gate.set()
    await task
    assert [m["offer"]["conversation_id"] for m in other.of("offer")] == ["n"]
    assert [m["conversation_id"] for m in other.of("message")] == ["n"]
    await router.idle()


async def test_changes_reach_the_lists_of_exactly_those_who_may_see_them(store: Any) -> None:
    router = Router(store, Recorder())
    sockets = {name: FakeSocket() for name in ("boss", "team", "owner", "stranger")}
    router.sockets.add("boss", "supervisor", sockets["boss"])
    router.sockets.add("team", "agent", sockets["team"], ("billing",))
    router.sockets.add("owner", "agent", sockets["owner"])
    router.sockets.add("stranger", "agent", sockets["stranger"], ("sales",))
    await add_conversation(store, "k", team="billing", assignee="owner", state="assigned")
    await router.on_events([_recorded("k", "cust-k")])
    for name in ("boss", "team", "owner"):
        assert sockets[name].of("conversation.changed") == [
            {"type": "conversation.changed", "conversation_id": "k", "state": "assigned"}
        ], name
    assert sockets["owner"].of("message")[0]["text"] == "hi"
    assert sockets["stranger"].sent == []

    status = c.ReplyStatus(
        reply_id="r-1",
        conversation_id="k",
        customer_id="cust-k",
        channel="email",
        status="failed",
        error="no outbound SMTP relay configured",
        at=c.utcnow(),
    )
    await router.on_events([c.envelope(c.REPLY_STATUS, status, id="st-1", source="/t").to_json()])
    assert sockets["owner"].of("reply.status") == [
        {
            "type": "reply.status",
            "conversation_id": "k",
            "reply_id": "r-1",
            "status": "failed",
            "error": "no outbound SMTP relay configured",
        }
    ]
    assert not sockets["boss"].of("reply.status") and not sockets["stranger"].sent


async def test_a_transfer_to_a_team_shows_in_its_members_queue_at_once(store: Any) -> None:
    router = Router(store, Recorder())
    await add_agent(store, "owner")
    await teams.create(store, {"_id": "billing", "name": "Billing"})
    member, stranger = FakeSocket(), FakeSocket()
    router.sockets.add("member", "agent", member, ("billing",))
    router.sockets.add("stranger", "agent", stranger)
    await add_conversation(store, "k", assignee="owner", state="assigned")
    await actions.transfer(router, as_agent("owner"), "k", team_id="billing", note="refund")
    await router.idle()
    assert [m["conversation_id"] for m in member.of("conversation.changed")] == ["k"]
    assert stranger.sent == []


async def test_the_stream_knows_the_agents_teams(api: Api) -> None:
    await api.call("POST", "/api/v1/teams", json={"id": "billing"})
    agent_id, token = await api.agent("bill@example.com", teams=["billing"])
    ws = await api.session.ws_connect(
        "/api/v1/agents/stream", headers={"Authorization": f"Bearer {token}"}
    )
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    assert api.router.sockets.teams[agent_id] == frozenset({"billing"})
    await ws.close()
