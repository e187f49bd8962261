"""The router service: conversation events → offers to agents → accept/decline/expire.

Every step is a guarded update in MongoDB, so a restart, a replayed event or a second router
never assigns a conversation twice. A periodic sweep re-routes what events missed: offers
that expired, conversations still waiting when an agent comes online.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from prometheus_client import Counter
from pymongo.errors import PyMongoError

from hub.web import dumps
from pipeline import contract as c
from pipeline import topics
from pipeline.publish import Publisher, Record
from router.policy import AgentView, rank
from store import agents, conversations, customers, offers
from store.mongo import Doc, Store

log = logging.getLogger("omnihub.router")

OFFERS = Counter("omnihub_router_offers_total", "offers by outcome", ["outcome"])
ROUTED_TYPES = {c.CONVERSATION_OPENED, c.CONVERSATION_REOPENED}
SOURCE = "/omnihub/router"
RESERVE_ROUNDS = 20


async def send_json(ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
    """Push to one socket; a socket closing meanwhile is not an error."""
    if ws.closed:
        return
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(dumps(payload).decode())


class RoutingError(Exception):
    """An agent action that cannot be done (offer gone, not theirs…); ``status`` for HTTP."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class Router:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        *,
        offer_timeout: float = 30.0,
        sweep_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.offer_timeout = offer_timeout
        self.sweep_interval = sweep_interval
        self.sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._consumer: AIOKafkaConsumer | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, bootstrap: str, group: str, session_timeout: float) -> None:
        self._consumer = AIOKafkaConsumer(
            topics.CUSTOMER_EVENTS,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            session_timeout_ms=int(session_timeout * 1000),
            heartbeat_interval_ms=1000,
            client_id="omnihub-router",
        )
        await self._consumer.start()
        self._tasks = [
            asyncio.create_task(self._consume(), name="router-consume"),
            asyncio.create_task(self._sweep_loop(), name="router-sweep"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=200)
                for records in batches.values():
                    for rec in records:
                        await self._on_event(rec.value)
                if batches:
                    await self._consumer.commit()
            except (KafkaError, PyMongoError) as exc:
                # nothing committed: the events come again; the sweep covers the gap meanwhile
                log.warning("router.consume_error error=%s", exc)
                await asyncio.sleep(1.0)

    async def _on_event(self, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            event = c.parse_event(raw)
        except c.ContractError as exc:
            log.warning("router.bad_event error=%s", exc)  # the pipeline's output: not ours
            return
        if event.type in ROUTED_TYPES:
            await self.route(event.data.conversation_id)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except PyMongoError as exc:
                log.warning("router.sweep_error error=%s", exc)

    async def sweep(self) -> None:
        """Expire overdue offers and route conversations still waiting for an agent."""
        now = c.utcnow()
        for offer in await offers.expired(self.store, now):
            if await offers.transition(self.store, offer["_id"], "expired", now):
                OFFERS.labels("expired").inc()
                await conversations.release_offer(
                    self.store, offer["conversation_id"], offer["_id"]
                )
                await self._notify(
                    offer["agent_id"], {"type": "offer.expired", "offer_id": offer["_id"]}
                )
                await self.route(offer["conversation_id"], exclude=(offer["agent_id"],))
        if await agents.online(self.store):
            for conv in await conversations.waiting(self.store, limit=50):
                await self.route(conv["_id"])

    # ------------------------------------------------------------------ routing
    async def route(self, conversation_id: str, exclude: tuple[str, ...] = ()) -> Doc | None:
        """Offer the conversation to the best agent; None if nobody can take it now."""
        for _ in range(RESERVE_ROUNDS):
            now = c.utcnow()
            candidates = await agents.online(self.store)
            if not candidates:
                return None
            views = [AgentView(a["_id"], True, a.get("last_offered_at")) for a in candidates]
            by_id = {a["_id"]: a for a in candidates}
            ranked = rank(views, exclude) or rank(views)  # all excluded: try them again
            for view in ranked:
                agent = await agents.reserve_turn(self.store, by_id[view.agent_id], now)
                if agent is not None:
                    return await self._offer(conversation_id, agent)
            # every turn was taken by a concurrent router: look again with fresh turns
        log.info("router.contended conversation=%s", conversation_id)
        return None  # the sweep comes back to it

    async def _offer(self, conversation_id: str, agent: Doc) -> Doc | None:
        now = c.utcnow()
        conv = await conversations.get(self.store, conversation_id)
        if conv is None or conv.get("assignee") or conv.get("offer_id") or not conv.get("active"):
            return None
        offer = {
            "_id": str(uuid.uuid4()),
            "conversation_id": conversation_id,
            "customer_id": conv["customer_id"],
            "agent_id": agent["_id"],
            "state": "pending",
            "created_at": now,
            "expires_at": now + timedelta(seconds=self.offer_timeout),
        }
        # the offer exists before the claim: a crash in between leaves an offer that expires
        await offers.create(self.store, offer)
        if await conversations.claim_for_offer(self.store, conversation_id, offer["_id"]) is None:
            await offers.transition(self.store, offer["_id"], "cancelled", now)
            return None
        OFFERS.labels("offered").inc()
        await self._notify(agent["_id"], {"type": "offer", "offer": await self.describe(offer)})
        return offer

    async def describe(self, offer: Doc) -> dict[str, Any]:
        """What an agent sees in an offer: the conversation and who the customer is."""
        conv = await conversations.get(self.store, offer["conversation_id"]) or {}
        cust = await customers.get(self.store, offer["customer_id"]) or {}
        last = await self.store.interactions.find_one(
            {"conversation_id": offer["conversation_id"]}, sort=[("occurred_at", -1)]
        )
        preview = (last or {}).get("text") or (last or {}).get("subject") or ""
        return {
            "id": offer["_id"],
            "conversation_id": offer["conversation_id"],
            "customer": {"id": cust.get("_id"), "display_name": cust.get("display_name")},
            "channel": conv.get("channel"),
            "preview": preview[:200],
            "created_at": offer["created_at"],
            "expires_at": offer["expires_at"],
        }

    # ------------------------------------------------------------------ agent actions
    async def accept(self, agent_id: str, offer_id: str) -> Doc:
        now = c.utcnow()
        offer = await offers.transition(
            self.store, offer_id, "accepted", now, agent_id=agent_id, unexpired=True
        )
        if offer is None:
            raise self._gone(await offers.get(self.store, offer_id), agent_id)
        conv = await conversations.assign(
            self.store, offer["conversation_id"], offer_id, agent_id, now
        )
        if conv is None:
            raise RoutingError(409, "conflict", "the conversation was assigned elsewhere")
        OFFERS.labels("accepted").inc()
        event = c.envelope(
            c.CONVERSATION_ASSIGNED,
            c.ConversationAssigned(
                conversation_id=conv["_id"],
                customer_id=conv["customer_id"],
                agent_id=agent_id,
                offer_id=offer_id,
                assigned_at=now,
            ),
            id=c.derived_id(offer_id, c.CONVERSATION_ASSIGNED),
            source=SOURCE,
            subject=conv["customer_id"],
        )
        await self.publisher.publish(
            [Record(topics.CUSTOMER_EVENTS, conv["customer_id"].encode(), event.to_json())]
        )
        return conv

    async def decline(self, agent_id: str, offer_id: str) -> None:
        now = c.utcnow()
        offer = await offers.transition(self.store, offer_id, "declined", now, agent_id=agent_id)
        if offer is None:
            raise self._gone(await offers.get(self.store, offer_id), agent_id)
        OFFERS.labels("declined").inc()
        await conversations.release_offer(self.store, offer["conversation_id"], offer_id)
        await self.route(offer["conversation_id"], exclude=(agent_id,))

    @staticmethod
    def _gone(offer: Doc | None, agent_id: str) -> RoutingError:
        if offer is None or offer.get("agent_id") != agent_id:
            return RoutingError(404, "not_found", "offer not found")
        return RoutingError(409, "conflict", f"offer is {offer['state']}, not pending")

    # ------------------------------------------------------------------ presence and pushes
    async def connected(self, agent_id: str, ws: web.WebSocketResponse) -> None:
        first = not self.sockets[agent_id]
        self.sockets[agent_id].add(ws)
        if first:
            await agents.set_presence(self.store, agent_id, True, c.utcnow())
        for offer in await offers.pending_for(self.store, agent_id):
            await send_json(ws, {"type": "offer", "offer": await self.describe(offer)})
        task = asyncio.create_task(self._route_waiting())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _route_waiting(self) -> None:
        with contextlib.suppress(PyMongoError):
            for conv in await conversations.waiting(self.store, limit=50):
                await self.route(conv["_id"])

    async def disconnected(self, agent_id: str, ws: web.WebSocketResponse) -> None:
        self.sockets[agent_id].discard(ws)
        if self.sockets[agent_id]:
            return
        del self.sockets[agent_id]
        now = c.utcnow()
        await agents.set_presence(self.store, agent_id, False, now)
        # an agent who left cannot accept: hand their pending offers on at once
        for offer in await offers.pending_for(self.store, agent_id):
            if await offers.transition(self.store, offer["_id"], "expired", now):
                OFFERS.labels("expired").inc()
                await conversations.release_offer(
                    self.store, offer["conversation_id"], offer["_id"]
                )
                await self.route(offer["conversation_id"], exclude=(agent_id,))

    async def _notify(self, agent_id: str, payload: dict[str, Any]) -> None:
        for ws in list(self.sockets.get(agent_id, ())):
            await send_json(ws, payload)
