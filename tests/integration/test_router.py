"""The router service against a real SecantusDB: offers, accept, decline, expiry, presence,
capacity, stickiness, queue order, SLA, resolve/reopen/transfer/reply, races."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from hub.web import Principal
from pipeline import contract as c
from pipeline import topics
from router import actions, sla
from router.errors import RoutingError
from router.service import Router, RouterConfig
from store import agents as agents_repo
from store.mongo import Store
from tests.integration.test_ingest import Recorder

pytestmark = pytest.mark.integration

CHANNELS = ("email", "sms", "telegram", "webchat", "call", "api")


class FakeSocket:
    """Collects what the router pushes to an agent's WebSocket."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_str(self, data: str) -> None:
        self.sent.append(json.loads(data))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == kind]


def agent_doc(
    agent_id: str,
    status: str = "online",
    *,
    capacity: dict[str, int] | None = None,
    skills: tuple[str, ...] = ("lang:fa", "lang:en"),
    teams: tuple[str, ...] = (),
    role: str = "agent",
) -> dict[str, Any]:
    return {
        "_id": agent_id,
        "name": agent_id,
        "email": f"{agent_id}@example.com",
        "role": role,
        "active": True,
        "status": status,
        "seen_at": c.utcnow(),
        "skills": list(skills),
        "teams": list(teams),
        "capacity": {ch: 0 for ch in CHANNELS} | (capacity or {"api": 5, "webchat": 3}),
        "holds": {ch: [] for ch in CHANNELS},
        "last_offered_at": None,
        "created_at": c.utcnow(),
    }


async def add_agent(store: Any, agent_id: str, status: str = "online", **kw: Any) -> None:
    await agents_repo.create(store, agent_doc(agent_id, status, **kw))


def conv_doc(conv_id: str, minutes_ago: float = 0, **kw: Any) -> dict[str, Any]:
    return {
        "_id": conv_id,
        "customer_id": kw.pop("customer_id", f"cust-{conv_id}"),
        "channel": kw.pop("channel", "api"),
        "thread": conv_id,
        "account": "api",
        "state": "open",
        "active": True,
        "assignee": None,
        "offer_id": None,
        "priority": 0,
        "opened_at": c.utcnow() - timedelta(minutes=minutes_ago),
        **kw,
    }


async def add_conversation(
    store: Any, conv_id: str, minutes_ago: float = 0, text: str = "hello", **kw: Any
) -> None:
    doc = conv_doc(conv_id, minutes_ago, **kw)
    await store.conversations.insert_one(doc)
    await store.interactions.insert_one(
        {
            "_id": f"i-{conv_id}",
            "customer_id": doc["customer_id"],
            "conversation_id": conv_id,
            "channel": doc["channel"],
            "direction": "in",
            "sender": [f"api:{doc['customer_id']}"],
            "source_id": f"s-{conv_id}",
            "occurred_at": doc["opened_at"],
            "text": text,
        }
    )


def who(offers: list[Any]) -> list[str | None]:
    return [o["agent_id"] if o else None for o in offers]


def as_agent(agent_id: str, role: str = "agent") -> Principal:
    return Principal("agent", agent_id, agent_id, role)  # type: ignore[arg-type]


async def test_offers_spread_by_load_and_accept_assigns_once(store) -> None:
    pub = Recorder()
    router = Router(store, pub)
    for a in ("a1", "a2"):
        await add_agent(store, a)
    for n in range(4):
        await add_conversation(store, f"k{n}", minutes_ago=4 - n)
    offered = [await router.route(f"k{n}") for n in range(4)]
    assert who(offered) == ["a1", "a2", "a1", "a2"]  # least loaded, then longest idle
    assert await router.route("k0") is None  # already offered: never twice
    conv = await router.accept("a1", offered[0]["_id"])
    assert conv["assignee"] == "a1" and conv["state"] == "assigned"
    with pytest.raises(RoutingError) as err:
        await router.accept("a1", offered[0]["_id"])
    assert err.value.status == 409
    with pytest.raises(RoutingError) as err:
        await router.accept("a1", offered[1]["_id"])  # a2's offer
    assert err.value.status == 404
    assigned = pub.events()
    assert [e["type"] for e in assigned] == [c.CONVERSATION_ASSIGNED]
    assert assigned[0]["data"]["agent_id"] == "a1"


async def test_decline_and_expiry_move_the_offer_to_the_next_agent(store) -> None:
    router = Router(store, Recorder(), offer_timeout=0.3)
    await add_agent(store, "a1")
    await add_agent(store, "a2")
    await add_conversation(store, "k")
    first = await router.route("k")
    await router.decline(first["agent_id"], first["_id"])
    await router.idle()
    second = await store.offers.find_one({"state": "pending"})
    assert second["agent_id"] != first["agent_id"]
    await asyncio.sleep(0.35)
    await router.sweep()  # the offer expired: it falls through
    await router.idle()
    third = await store.offers.find_one({"state": "pending"})
    assert third["agent_id"] == first["agent_id"]
    states = sorted([d["state"] async for d in store.offers.find({})])
    assert states == ["declined", "expired", "pending"]
    # every unit given back: only the pending offer holds capacity
    loads = {d["_id"]: agents_repo.load_of(d)["api"] async for d in store.agents.find({})}
    assert loads == {first["agent_id"]: 1, second["agent_id"]: 0}


async def test_waiting_conversations_reach_an_agent_who_comes_online(store) -> None:
    router = Router(store, Recorder())
    await add_agent(store, "late", status="offline")
    await add_conversation(store, "old", minutes_ago=5)
    await add_conversation(store, "new")
    assert await router.route("old") is None  # nobody online
    ws = FakeSocket()
    await router.connected("late", ws)
    await router.idle()
    offers = ws.of("offer")
    assert [o["offer"]["conversation_id"] for o in offers] == ["old", "new"]  # oldest first
    await router.disconnected("late", ws)
    await router.idle()
    assert await store.offers.count_documents({"state": "pending"}) == 0
    assert await store.offers.count_documents({"state": "withdrawn"}) == 2


async def test_capacity_per_channel_is_never_exceeded_and_freed_capacity_pulls_the_queue(
    store,
) -> None:
    router = Router(store, Recorder())
    await add_agent(store, "a", capacity={"webchat": 2, "email": 1})
    for n, ch in enumerate(["webchat", "webchat", "webchat", "email", "email"]):
        await add_conversation(store, f"k{n}", minutes_ago=10 - n, channel=ch)
    await router.drain()
    held = sorted([d["conversation_id"] async for d in store.offers.find({"state": "pending"})])
    assert held == ["k0", "k1", "k3"]  # 2 chats + 1 email; k2 and k4 wait
    offer = await store.offers.find_one({"conversation_id": "k0"})
    await router.accept("a", offer["_id"])
    await actions.resolve(router, as_agent("a"), "k0")
    await router.idle()
    pending = {d["conversation_id"] async for d in store.offers.find({"state": "pending"})}
    assert "k2" in pending and "k4" not in pending  # the freed chat slot pulled the waiting chat


class Reads(monitoring.CommandListener):
    """The collections each find of a client reads."""

    def __init__(self) -> None:
        self.finds: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.finds.append(str(event.command["find"]))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_drain_reads_no_more_than_it_needs(mongo_url, store, monkeypatch) -> None:
    """Every accept and resolve drains the queue. When the copy of the queue is fresh and
    empty that costs no read at all; when nobody has room it costs the agents only, never
    the queue (sorting 5,000 waiting conversations took SecantusDB 300 ms)."""
    reads = Reads()
    client: AsyncMongoClient = AsyncMongoClient(mongo_url, event_listeners=[reads])
    try:
        watched = Store(client, client[store.db.name])
        router = Router(watched, Recorder())
        await add_agent(store, "a")
        await router.drain()  # the agents, then the (empty) queue
        assert reads.finds == ["agents", "conversations"]
        reads.finds.clear()
        for _ in range(5):
            await router.drain()
        assert reads.finds == []
        # something waits again (seen by this router): the next drain offers it
        await add_conversation(store, "k")
        router.requeued(await store.conversations.find_one({"_id": "k"}))
        await router.drain()
        assert "agents" in reads.finds
        offer = await store.offers.find_one({"conversation_id": "k", "state": "pending"})
        assert offer is not None and offer["agent_id"] == "a"

        # nobody has room, the queue is long and its copy always stale: agents only
        await store.agents.update_one({"_id": "a"}, {"$set": {"status": "offline"}})
        for n in range(3):
            await add_conversation(store, f"w{n}")
        monkeypatch.setattr("router.service.QUEUE_TTL", 0.0)
        reads.finds.clear()
        for _ in range(3):
            await router.drain()
        assert reads.finds == ["agents"] * 3
    finally:
        await client.close()


async def test_skills_language_team_and_sticky_agent(store) -> None:
    router = Router(store, Recorder())
    await add_agent(store, "fa", skills=("lang:fa",))
    await add_agent(store, "en", skills=("lang:en",))
    await add_agent(store, "billing", skills=("lang:fa", "lang:en"), teams=("billing",))
    await add_conversation(store, "persian", text="سلام، سفارشم کی می‌رسه؟")
    await add_conversation(store, "english", text="Hello, where is my order?")
    await add_conversation(store, "team", text="hi", team="billing")
    assert (await router.route("persian"))["agent_id"] in ("fa", "billing")
    assert (await router.route("english"))["agent_id"] in ("en", "billing")
    assert (await router.route("team"))["agent_id"] == "billing"
    conv = await store.conversations.find_one({"_id": "persian"})
    assert conv["language"] == "fa" and conv["required_skills"] == ["lang:fa"]
    # the customer comes back on another thread: the agent who served them gets it first
    offer = await store.offers.find_one({"conversation_id": "english"})
    await router.accept(offer["agent_id"], offer["_id"])
    await add_conversation(store, "again", customer_id="cust-english", text="me again")
    assert (await router.route("again"))["agent_id"] == offer["agent_id"]


async def test_urgent_and_vip_conversations_are_served_first_and_sla_alerts_fire(store) -> None:
    pub = Recorder()
    router = Router(store, pub, sla_first_response=(1.0, 1.0, 1.0), sla_warn_fraction=0.5)
    await store.customers.insert_one({"_id": "cust-vip", "segment": "vip"})
    await add_conversation(store, "plain", minutes_ago=3, text="where is my parcel")
    await add_conversation(store, "urgent", minutes_ago=2, text="فوری: پولم کم شده، شکایت دارم")
    await add_conversation(store, "vip", minutes_ago=1, customer_id="cust-vip", text="hi")
    await router.route_many(["plain", "urgent", "vip"])  # nobody online: classified, waiting
    prio = {d["_id"]: d["priority"] async for d in store.conversations.find({})}
    assert prio == {"plain": 0, "urgent": 1, "vip": 1}
    supervisor = FakeSocket()
    await add_agent(store, "boss", status="offline", role="supervisor")
    router.sockets.add("boss", "supervisor", supervisor)
    await asyncio.sleep(1.05)
    assert await sla.sweep(router) >= 3
    assert await sla.sweep(router) == 0  # once per level, whichever router gets there first
    signals = [e for e in pub.events() if e["type"] == c.SIGNAL_RAISED]
    kinds = {(e["data"]["conversation_id"], e["data"]["severity"]) for e in signals}
    assert ("urgent", "critical") in kinds and ("plain", "warning") in kinds
    assert {m["kind"] for m in supervisor.of("sla")} == {"sla.first_response"}
    # the VIP needs an agent with the segment skill; the urgent complaint outranks the rest
    await add_agent(store, "x", capacity={"api": 1}, skills=("lang:fa", "lang:en"))
    offer = await router.route_many(["plain", "urgent", "vip"])
    assert who(offer) == ["x"] and offer[0]["conversation_id"] == "urgent"


async def test_agent_who_disappears_has_offers_rerouted(store) -> None:
    router = Router(store, Recorder(), presence_timeout=0.3)
    await add_agent(store, "ghost")
    await add_conversation(store, "k")
    offer = await router.route("k")
    assert offer["agent_id"] == "ghost"
    await add_agent(store, "alive")
    await asyncio.sleep(0.35)
    await agents_repo.heartbeat(store, ["alive"], c.utcnow())
    await router.sweep()
    await router.idle()
    ghost = await store.agents.find_one({"_id": "ghost"})
    assert ghost["status"] == "offline"
    pending = await store.offers.find_one({"state": "pending"})
    assert pending["agent_id"] == "alive"


async def test_reply_resolve_reopen_transfer_and_notes(store) -> None:
    pub = Recorder()
    router = Router(store, pub)
    await add_agent(store, "a")
    await add_agent(store, "b")
    await store.db["teams"].insert_one({"_id": "vip-desk", "name": "VIP"})
    await add_agent(store, "t", teams=("vip-desk",), status="offline")
    await add_conversation(store, "k")
    offer = await router.route("k")
    first = offer["agent_id"]
    other = "b" if first == "a" else "a"
    with pytest.raises(RoutingError) as err:
        await actions.reply(router, as_agent(other), "k", "not mine")
    assert err.value.status == 403
    await router.accept(first, offer["_id"])
    out = await actions.reply(router, as_agent(first), "k", "on it", client_id="r1")
    again = await actions.reply(router, as_agent(first), "k", "on it", client_id="r1")
    assert out["first_response"] and not again["first_response"]
    assert out["reply_id"] == again["reply_id"] and out["to"] == ["api:cust-k"]
    replies = [json.loads(r.value) for r in pub.records if r.topic == topics.outbound("api")]
    assert replies[0]["type"] == c.REPLY_REQUESTED and replies[0]["data"]["text"] == "on it"
    assert (await store.conversations.find_one({"_id": "k"}))["first_response_at"] is not None
    # transfer to the other agent with a note: an offer they accept
    moved = await actions.transfer(router, as_agent(first), "k", agent_id=other, note="VIP, ارجاع")
    assert moved["assignee"] is None and moved["offer_agent"] == other
    pending = await store.offers.find_one({"state": "pending"})
    assert pending["agent_id"] == other and pending["transfer"]["note"] == "VIP, ارجاع"
    await router.accept(other, pending["_id"])
    loads = {d["_id"]: agents_repo.load_of(d)["api"] async for d in store.agents.find({})}
    assert loads == {first: 0, other: 1, "t": 0}
    # a supervisor moves it to a team's queue; the member gets it when online
    await actions.transfer(router, as_agent("s", "supervisor"), "k", team_id="vip-desk")
    await router.set_presence("t", "online")
    await router.idle()
    assert (await store.offers.find_one({"state": "pending"}))["agent_id"] == "t"
    await actions.add_note(router, as_agent("t"), "k", "called the customer")
    await router.accept("t", (await store.offers.find_one({"state": "pending"}))["_id"])
    resolved = await actions.resolve(router, as_agent("t"), "k")
    assert resolved["state"] == "resolved" and not resolved["active"]
    with pytest.raises(RoutingError) as err:
        await actions.resolve(router, as_agent("t"), "k")
    assert err.value.status == 409
    # the thread gets a new conversation; reopening the old one would make two: 409
    await store.conversations.insert_one(conv_doc("k2", thread="k", customer_id="cust-k"))
    with pytest.raises(RoutingError) as err:
        await actions.reopen(router, as_agent("t"), "k")
    assert err.value.code == "thread_busy"
    await store.conversations.update_one({"_id": "k2"}, {"$set": {"active": False}})
    reopened = await actions.reopen(router, as_agent("t"), "k")
    assert reopened["active"] and reopened["state"] == "open"
    types = [e["type"] for e in pub.events()]
    assert types.count(c.CONVERSATION_RESOLVED) == 1 and types[-1] == c.CONVERSATION_REOPENED
    await router.idle()
    notes = [n async for n in store.db["notes"].find({"conversation_id": "k"})]
    assert [n["kind"] for n in notes] == ["transfer", "transfer", "note"]


async def test_two_routers_racing_never_double_offer_or_double_assign(store) -> None:
    r1, r2 = Router(store, Recorder()), Router(store, Recorder())
    for a in range(5):
        await add_agent(store, f"a{a}", capacity={"api": 12})
    convs = [f"k{n}" for n in range(60)]
    for k in convs:
        await add_conversation(store, k)
    await asyncio.gather(*(r.route(k) for k in convs for r in (r1, r2)))
    # a loser's reservation holds a unit for an instant: what it blocked, the next drain places
    await asyncio.gather(r1.drain(), r2.drain())
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
    loads = [sum(agents_repo.load_of(d).values()) async for d in store.agents.find({})]
    assert loads == [12] * 5


async def test_one_router_decides_one_pass_at_a_time(store) -> None:
    """New conversations routed while drains run (freed room, agents coming online) are each
    planned by one pass: no offer is made only to lose its claim and be cancelled."""
    router = Router(store, Recorder())
    for a in range(4):
        await add_agent(store, f"a{a}", capacity={"api": 10})
    convs = [f"k{n}" for n in range(40)]
    for k in convs:
        await add_conversation(store, k)
    batches = [convs[i : i + 10] for i in range(0, 40, 10)]
    passes = [step for b in batches for step in (router.route_many(b), router.drain())]
    await asyncio.gather(*passes)
    await router.idle()
    states = [d["state"] async for d in store.offers.find({})]
    assert states == ["pending"] * 40  # one offer each, none cancelled
    conv = {d["_id"]: d async for d in store.conversations.find({})}
    assert all(conv[k]["offer_id"] for k in convs)
    loads = [sum(agents_repo.load_of(d).values()) async for d in store.agents.find({})]
    assert sum(loads) == 40 and max(loads) <= 10


async def test_a_pass_offers_in_one_go_and_undoes_what_it_lost(store) -> None:
    """make_offers, the batch behind every drain pass: what it won is offered and pushed in
    order; a conversation claimed meanwhile costs it the offer (cancelled) and the unit (given
    back); an offer closed before its claim landed gives the conversation back to the queue."""
    from store import offers as offers_repo

    router = Router(store, Recorder())
    sock = FakeSocket()
    router.sockets.add("a1", "agent", sock)
    await add_agent(store, "a1", capacity={"api": 5})
    for k in ("k1", "k2", "k3", "k4"):
        await add_conversation(store, k, text=f"about {k}")
    await store.conversations.update_one({"_id": "k2"}, {"$set": {"offer_id": "elsewhere"}})
    now = c.utcnow()
    convs = {d["_id"]: d async for d in store.conversations.find({})}
    wanted = ["k1", "k2", "k3", "k4"]
    assert await agents_repo.reserve_many(store, "a1", "api", 5, wanted, now)
    # more than the room left is refused whole, nothing held
    assert not await agents_repo.reserve_many(store, "a1", "api", 5, ["x1", "x2"], now)

    create_many = offers_repo.create_many

    async def closed_at_once(st: Any, docs: Any) -> None:  # k3's offer withdrawn meanwhile
        await create_many(st, docs)
        k3 = next(d["_id"] for d in docs if d["conversation_id"] == "k3")
        await offers_repo.transition(st, k3, "withdrawn", c.utcnow(), fetch=False)

    offers_repo.create_many = closed_at_once  # type: ignore[assignment]
    try:
        made = await router.make_offers([(convs[k], "a1") for k in wanted], now)
    finally:
        offers_repo.create_many = create_many  # type: ignore[assignment]
    await router.idle()
    assert [o is not None for o in made] == [True, False, False, True]
    assert [m["offer"]["conversation_id"] for m in sock.of("offer")] == ["k1", "k4"]
    assert sock.of("offer")[0]["offer"]["preview"] == "about k1"
    state = {d["conversation_id"]: d["state"] async for d in store.offers.find({})}
    assert state == {"k1": "pending", "k2": "cancelled", "k3": "withdrawn", "k4": "pending"}
    conv = {d["_id"]: d async for d in store.conversations.find({})}
    assert conv["k2"]["offer_id"] == "elsewhere"  # the other claim stands
    assert conv["k3"]["offer_id"] is None and conv["k3"]["passed"] == ["a1"]
    assert conv["k1"]["offer_id"] == made[0]["_id"] and conv["k4"]["offer_id"] == made[3]["_id"]
    held = (await store.agents.find_one({"_id": "a1"}))["holds"]["api"]
    # k2's unit given back here; k3's is the closer's to give back (it found no claim yet)
    assert sorted(h["id"] for h in held) == ["k1", "k3", "k4"]


def test_config_reads_the_settings() -> None:
    from hub.settings import Settings

    cfg = RouterConfig.from_settings(Settings(offer_timeout=7, sticky_window=60))
    assert cfg.offer_timeout == 7 and cfg.sticky_window == 60
    assert "فوری" in cfg.urgency_keywords and cfg.default_capacity["email"] == 10


async def test_sla_timers_follow_each_clock_and_the_sweep_never_reads_resolved_history(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep reads the timers that are due and the conversations they name, by id, and
    nothing else: resolved conversations, however many, cost it nothing. Timers move on level by
    level, go when nothing is left to raise, come back on reopen, and conversations whose
    clocks started without one (an older version) get one at start."""
    from store import conversations, sla_timers

    router = Router(
        store,
        Recorder(),
        sla_first_response=(4.0,) * 3,
        sla_resolution=(12.0,) * 3,
        sla_warn_fraction=0.5,
    )
    await add_conversation(store, "a")
    await add_conversation(store, "b")
    await store.conversations.insert_many(  # history: resolved long ago, never to be read
        [conv_doc(f"old-{i}", 60 * 24, state="resolved", active=False) for i in range(300)]
    )
    await router.route_many(["a", "b"])  # nobody online: classified, timers set
    timers = store.db[sla_timers.COLLECTION]
    convs = {d["_id"]: d async for d in store.conversations.find({"_id": {"$in": ["a", "b"]}})}
    armed = {d["_id"]: d["at"] async for d in timers.find({})}
    assert armed == {k: convs[k]["first_response_warn_at"] for k in ("a", "b")}

    real_find = store.conversations.find
    read: list[Any] = []

    def find(flt: Any = None, *args: Any, **kwargs: Any) -> Any:
        read.append(flt)
        return real_find(flt, *args, **kwargs)

    monkeypatch.setattr(store.conversations, "find", find)
    await asyncio.sleep(2.2)  # past the first-response warning (half of 4 s), before the breach
    assert await sla.sweep(router) == 2
    assert all(set(f) == {"_id"} for f in read), read  # by id only: no search
    at = {d["_id"]: d["at"] async for d in timers.find({})}
    assert at == {k: convs[k]["first_response_due"] for k in ("a", "b")}  # next: the breach

    await store.conversations.update_one(
        {"_id": "b"}, {"$set": {"active": False, "state": "resolved"}}
    )
    await asyncio.sleep(2.0)  # past the first-response breach
    assert await sla.sweep(router) == 1  # "a" breached; "b" is resolved: its timer goes
    at = {d["_id"]: d["at"] async for d in timers.find({})}
    assert at == {"a": convs["a"]["resolution_warn_at"]}
    assert await sla.sweep(router) == 0

    # "b" comes back: its clocks restart and its timer with them
    await store.conversations.update_one(
        {"_id": "b"}, {"$set": {"active": True, "state": "open", "reopened_at": c.utcnow()}}
    )
    await conversations.unclassify(store, "b", c.utcnow())
    await router.route_many(["b"])
    b = await store.conversations.find_one({"_id": "b"})
    assert (await timers.find_one({"_id": "b"}))["at"] == b["first_response_warn_at"]

    # clocks started without a timer (an older version): armed when a router starts
    await timers.delete_many({})
    assert await sla.arm_active(store) == 2
    assert {d["_id"] async for d in timers.find({})} == {"a", "b"}


async def test_the_consumer_commits_what_it_handled_at_most_once_an_interval_and_at_stop(
    store, bootstrap
) -> None:
    """Each commit costs the embedded broker five fsynced writes: the router commits what it
    handled at most once per commit_interval and the rest when it stops; a batch that failed
    is read again, not skipped."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.errors import TopicAlreadyExistsError
    from pymongo.errors import AutoReconnect

    from hub.bootstrap import create_topic

    with contextlib.suppress(TopicAlreadyExistsError):
        await create_topic(bootstrap, topics.CUSTOMER_EVENTS, 4)
    tp = TopicPartition(topics.CUSTOMER_EVENTS, 0)
    group = f"router-commits-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)  # reads commits only
    await producer.start()
    await reader.start()

    async def started(interval: float) -> Router:
        router = Router(store, Recorder(), commit_interval=interval)
        await router.start(bootstrap, group, 6.0, fetch_wait=0.05)
        assert router._consumer is not None
        for _ in range(200):
            if tp in router._consumer.assignment():
                break
            await asyncio.sleep(0.1)
        assert tp in router._consumer.assignment()
        return router

    async def until(check: Any) -> None:
        for _ in range(100):
            if await check():
                return
            await asyncio.sleep(0.05)

    try:
        router = await started(3600.0)
        seen: list[bytes] = []
        fail = {"next": 1}
        handle = router.on_events

        async def on_events(raws: Any) -> None:
            raws = list(raws)
            if fail["next"]:
                fail["next"] -= 1
                raise AutoReconnect("store away (test)")
            seen.extend(raws)
            await handle(raws)

        router.on_events = on_events  # type: ignore[method-assign]
        await asyncio.sleep(0.5)  # its position at the partition's end is taken
        sent: list[bytes] = []
        for n in range(3):  # three batches, one after the other
            values = [f"not an event {n}.{i}".encode() for i in range(5)]
            for v in values:
                last = await producer.send_and_wait(tp.topic, v, partition=0)
            sent += values

            async def caught_up(k: int = len(sent)) -> bool:
                return len(seen) >= k

            await until(caught_up)
        assert seen == sent  # the first batch failed, came again once, in order
        assert await reader.committed(tp) is None  # handled, not committed yet
        await router.stop()
        assert await reader.committed(tp) == last.offset + 1

        router = await started(0.0)  # interval 0: each batch is committed once handled
        try:
            more = await producer.send_and_wait(tp.topic, b"one more", partition=0)

            async def committed() -> bool:
                return await reader.committed(tp) == more.offset + 1

            await until(committed)
            assert await committed()
        finally:
            await router.stop()
    finally:
        await reader.stop()
        await producer.stop()
