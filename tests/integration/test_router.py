"""The first-cut router against a real SecantusDB: offers, accept, decline, expiry, races."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from pipeline import contract as c
from router.service import Router, RoutingError
from store import agents as agents_repo
from tests.integration.test_ingest import Recorder

pytestmark = pytest.mark.integration


class FakeSocket:
    """Collects what the router pushes to an agent's WebSocket."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_str(self, data: str) -> None:
        self.sent.append(json.loads(data))


async def add_agent(store: Any, agent_id: str, online: bool = True) -> None:
    await agents_repo.create(
        store,
        {
            "_id": agent_id,
            "name": agent_id,
            "token_hash": f"h-{agent_id}",
            "active": True,
            "online": online,
            "last_offered_at": None,
            "created_at": c.utcnow(),
        },
    )


async def add_conversation(store: Any, conv_id: str, minutes_ago: int = 0) -> None:
    await store.conversations.insert_one(
        {
            "_id": conv_id,
            "customer_id": f"cust-{conv_id}",
            "channel": "api",
            "thread": conv_id,
            "account": "api",
            "state": "open",
            "active": True,
            "assignee": None,
            "offer_id": None,
            "opened_at": c.utcnow() - timedelta(minutes=minutes_ago),
        }
    )


async def test_offers_go_round_robin_and_accept_assigns_once(store) -> None:
    pub = Recorder()
    router = Router(store, pub, offer_timeout=30)
    for a in ("a1", "a2"):
        await add_agent(store, a)
    for n in range(4):
        await add_conversation(store, f"k{n}")
    offered = [await router.route(f"k{n}") for n in range(4)]
    assert [o["agent_id"] for o in offered] == ["a1", "a2", "a1", "a2"]
    assert await router.route("k0") is None  # already offered: never twice
    conv = await router.accept("a1", offered[0]["_id"])
    assert conv["assignee"] == "a1" and conv["state"] == "assigned"
    with pytest.raises(RoutingError) as err:
        await router.accept("a1", offered[0]["_id"])
    assert err.value.status == 409
    with pytest.raises(RoutingError) as err:
        await router.accept("a1", offered[1]["_id"])  # a2's offer
    assert err.value.status == 404
    assigned = [json.loads(r.value) for r in pub.records]
    assert [e["type"] for e in assigned] == [c.CONVERSATION_ASSIGNED]
    assert assigned[0]["data"]["agent_id"] == "a1"


async def test_decline_and_expiry_move_the_offer_to_the_next_agent(store) -> None:
    router = Router(store, Recorder(), offer_timeout=0.2)
    await add_agent(store, "a1")
    await add_agent(store, "a2")
    await add_conversation(store, "k")
    first = await router.route("k")
    await router.decline(first["agent_id"], first["_id"])
    second = await store.offers.find_one({"state": "pending"})
    assert second["agent_id"] != first["agent_id"]
    await asyncio.sleep(0.3)
    await router.sweep()  # the offer expired: it falls through
    third = await store.offers.find_one({"state": "pending"})
    assert third["agent_id"] == first["agent_id"]
    states = sorted([d["state"] async for d in store.offers.find({})])
    assert states == ["declined", "expired", "pending"]


async def test_waiting_conversations_reach_an_agent_who_comes_online(store) -> None:
    router = Router(store, Recorder())
    await add_agent(store, "late", online=False)
    await add_conversation(store, "old", minutes_ago=5)
    await add_conversation(store, "new")
    assert await router.route("old") is None  # nobody online
    ws = FakeSocket()
    await router.connected("late", ws)  # type: ignore[arg-type]
    for _ in range(50):
        if ws.sent:
            break
        await asyncio.sleep(0.05)
    assert ws.sent[0]["type"] == "offer"
    assert ws.sent[0]["offer"]["conversation_id"] == "old"  # oldest first
    await router.disconnected("late", ws)  # type: ignore[arg-type]
    assert await store.offers.count_documents({"state": "pending"}) == 0


async def test_two_routers_racing_never_double_offer_or_double_assign(store) -> None:
    r1, r2 = Router(store, Recorder()), Router(store, Recorder())
    for a in range(5):
        await add_agent(store, f"a{a}")
    convs = [f"k{n}" for n in range(60)]
    for k in convs:
        await add_conversation(store, k)
    await asyncio.gather(*(r.route(k) for k in convs for r in (r1, r2)))
    pending = [d async for d in store.offers.find({"state": "pending"})]
    assert sorted(d["conversation_id"] for d in pending) == sorted(convs)
    results = await asyncio.gather(
        *(r.accept(o["agent_id"], o["_id"]) for o in pending for r in (r1, r2)),
        return_exceptions=True,
    )
    ok = [x for x in results if isinstance(x, dict)]
    assert len(ok) == 60
    assert all(isinstance(x, RoutingError) for x in results if not isinstance(x, dict))
    assert await store.conversations.count_documents({"state": "assigned"}) == 60
