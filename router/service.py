"""The router service: conversation events → offers to agents → accept/decline/expire.

Every step is a guarded update in MongoDB, so a restart, a replayed event or a second router
never assigns a conversation twice nor exceeds an agent's capacity:

1. reserve: the agent's ``holds.<channel>`` gets the conversation only while shorter than the
   capacity (store/agents.py);
2. the offer is written (pending, with an expiry);
3. claim: the conversation takes the offer only while unassigned and unoffered.

A failed claim cancels the offer and gives the unit back. A crash between steps leaves an offer
that expires or a hold that the leak sweep returns. A pass over the queue takes each step for
all its offers at once (one write per agent, one insert, the claims together, one read of their
states), since on SecantusDB a command's fixed cost outweighs its size. Every trigger (a
conversation opened, an agent coming online, capacity freed by resolve/transfer/decline/
expiry) drains the waiting queue in policy order, so the oldest highest-priority conversation
an agent can take is pulled at once; a periodic sweep covers whatever an event missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram
from pymongo.errors import PyMongoError

from pipeline import contract as c
from pipeline import topics
from pipeline.publish import Publisher, Record
from pipeline.together import AT_ONCE_MAX, together
from router import policy, sla
from router.classification import classification
from router.errors import RoutingError
from router.sockets import Socket, Sockets, send_json
from store import agents, conversations, customers, offers
from store.mongo import Doc, Store, find_in

log = logging.getLogger("omnihub.router")

OFFERS = Counter("omnihub_router_offers_total", "offers by outcome", ["outcome"])
DECISION = Histogram(
    "omnihub_router_drain_seconds",
    "time to drain the waiting queue once",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PASS = Histogram(
    "omnihub_router_pass_seconds",
    "one routing pass: wait = for the pass under way in this process, decide = its own work",
    ["part"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ROUTED_TYPES = {c.CONVERSATION_OPENED, c.CONVERSATION_REOPENED}
# events after which a conversation may move in someone's list (console live updates)
CHANGE_TYPES = {
    c.CONVERSATION_OPENED,
    c.CONVERSATION_REOPENED,
    c.CONVERSATION_ASSIGNED,
    c.CONVERSATION_RESOLVED,
    c.INTERACTION_RECORDED,
}
SOURCE = "/omnihub/router"
RESERVE_ROUNDS = 4
MAX_CANDIDATES = 8
DRAIN_PAGE = 200
PARALLEL = 16
DRAIN_PASSES = 3  # passes one drain() call makes for triggers that arrive while it runs
QUEUE_TTL = 2.0  # seconds a copy of the waiting queue is used before it is read again
SEEN_MAX = 10_000
SLA_EVERY = 5  # sweeps between SLA checks (a minute-scale clock needs no 1 s check)
LEAK_GRACE = 10.0  # seconds past an offer's life before a hold with no owner is returned
MESSAGE_FIELDS = {"conversation_id": 1, "direction": 1, "occurred_at": 1, "subject": 1, "text": 1}
UNRECORDED_GRACE = timedelta(seconds=10)  # a conversation with no message yet waits this long

__all__ = ["Router", "RouterConfig", "RoutingError", "send_json"]


@dataclass(frozen=True)
class RouterConfig:
    offer_timeout: float = 30.0
    sweep_interval: float = 1.0
    sticky_window: float = 86400.0
    presence_timeout: float = 20.0
    default_capacity: dict[str, int] = field(
        default_factory=lambda: {
            "webchat": 3, "telegram": 3, "sms": 5, "api": 5, "email": 10, "call": 1,
        }
    )
    default_agent_skills: tuple[str, ...] = ("lang:fa", "lang:en")
    urgency_keywords: tuple[str, ...] = ("فوری", "شکایت", "urgent", "refund")
    vip_segments: tuple[str, ...] = ("vip",)
    skilled_segments: tuple[str, ...] = ("vip",)
    account_skills: dict[str, list[str]] = field(default_factory=dict)
    sla_first_response: tuple[float, ...] = (3600.0, 900.0, 300.0)
    sla_resolution: tuple[float, ...] = (86400.0, 14400.0, 3600.0)
    sla_warn_fraction: float = 0.2
    session_ttl: float = 43200.0
    # the consumer commits what it handled at most this often (and at stop): every commit is
    # five fsynced writes on the embedded broker, and a replayed event changes nothing
    commit_interval: float = 1.0

    @classmethod
    def from_settings(cls, s: Any) -> RouterConfig:
        return cls(
            offer_timeout=s.offer_timeout,
            sticky_window=s.sticky_window,
            presence_timeout=s.presence_timeout,
            default_capacity=dict(s.default_capacity),
            default_agent_skills=tuple(s.default_agent_skills),
            urgency_keywords=tuple(s.urgency_keywords),
            vip_segments=tuple(s.vip_segments),
            skilled_segments=tuple(s.skilled_segments),
            account_skills={k: list(v) for k, v in s.account_skills.items()},
            sla_first_response=tuple(s.sla_first_response),
            sla_resolution=tuple(s.sla_resolution),
            sla_warn_fraction=s.sla_warn_fraction,
            session_ttl=s.session_ttl,
        )


def agent_view(doc: Doc) -> policy.AgentView:
    return policy.AgentView(
        agent_id=doc["_id"],
        status=doc.get("status", "offline"),
        skills=frozenset(doc.get("skills") or ()),
        teams=frozenset(doc.get("teams") or ()),
        capacity=dict(doc.get("capacity") or {}),
        load=agents.load_of(doc),
        last_offered_at=doc.get("last_offered_at"),
    )


def _has_room(pool: Iterable[Doc]) -> bool:
    return any(agent_view(a).free(ch) > 0 for a in pool for ch in (a.get("capacity") or {}))


def _is_waiting(doc: Doc) -> bool:
    return bool(doc.get("active")) and doc.get("assignee") is None and doc.get("offer_id") is None


class Router:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        config: RouterConfig | None = None,
        **overrides: Any,
    ) -> None:
        self.store = store
        self.publisher = publisher
        base = config or RouterConfig()
        self.config = RouterConfig(**{**base.__dict__, **overrides}) if overrides else base
        self.sockets = Sockets()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._handled: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._draining = False
        self._drain_again = False
        self._gate = asyncio.Semaphore(PARALLEL)
        self._deciding = asyncio.Lock()  # one routing pass at a time (see _route_docs)
        self._room = True  # whether the last pass found an agent with room (see _decide)
        self._queue: list[Doc] | None = None
        # customer and first words read while classifying, for the offer that follows
        self._seen: dict[str, tuple[Doc | None, str | None]] = {}
        self._queue_at = 0.0

    @property
    def offer_timeout(self) -> float:
        return self.config.offer_timeout

    # ------------------------------------------------------------------ lifecycle
    async def start(
        self, bootstrap: str, group: str, session_timeout: float, fetch_wait: float
    ) -> None:
        self._consumer = AIOKafkaConsumer(
            topics.CUSTOMER_EVENTS,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            session_timeout_ms=int(session_timeout * 1000),
            heartbeat_interval_ms=1000,
            fetch_max_wait_ms=int(fetch_wait * 1000),
            client_id="omnihub-router",
        )
        await self._consumer.start()
        self.start_loops(consume=True)

    def start_loops(self, *, consume: bool = False) -> None:
        """Start the background loops (the consumer only if started)."""
        loops = [self._sweep_loop(), self._heartbeat_loop()]
        if consume:
            loops.append(self._consume())
        self._tasks = [asyncio.create_task(loop) for loop in loops]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._consumer is not None:
            with contextlib.suppress(KafkaError):
                await self._commit()  # what was handled since the last commit
            await self._consumer.stop()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a follow-up (drain, re-route) without making the caller wait for it."""
        task = asyncio.create_task(self._logged(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _logged(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except (PyMongoError, KafkaError) as exc:
            log.warning("router.background_error error=%s", exc)

    async def idle(self) -> None:
        """Wait until no follow-up is running (tests and benchmarks)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # ------------------------------------------------------------------ events
    async def _consume(self) -> None:
        assert self._consumer is not None
        committed_at = time.monotonic()
        while True:
            batches: dict[TopicPartition, list[Any]] = {}
            handled = False
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
                events = [rec.value for records in batches.values() for rec in records]
                if events:
                    await self.on_events(events)
                handled = True
                for tp, records in batches.items():
                    if records:
                        self._handled[tp] = records[-1].offset + 1
                if self._handled and (
                    time.monotonic() - committed_at >= self.config.commit_interval
                ):
                    await self._commit()
                    committed_at = time.monotonic()
            except (KafkaError, PyMongoError) as exc:
                # a batch not handled comes again (a replay changes nothing); meanwhile the
                # sweep covers what it would have routed
                log.warning("router.consume_error error=%s", exc)
                if not handled:
                    for tp, records in batches.items():
                        if records:
                            with contextlib.suppress(KafkaError, AssertionError):
                                self._consumer.seek(tp, records[0].offset)
                await asyncio.sleep(1.0)

    async def _commit(self) -> None:
        """Commit the offsets handled since the last commit, of the partitions still ours."""
        if self._consumer is None or not self._handled:
            return
        assigned = self._consumer.assignment()
        offsets = {tp: o for tp, o in self._handled.items() if tp in assigned}
        if offsets:
            await self._consumer.commit(offsets)
        self._handled.clear()

    async def on_events(self, raws: Iterable[bytes | None]) -> None:
        """Route the conversations opened or reopened, push new messages to their agents."""
        to_route: list[str] = []
        recorded: list[Any] = []
        statuses: list[Any] = []
        changed: list[str] = []
        typing: list[c.Typing] = []
        for raw in raws:
            if raw is None:
                continue
            try:
                event = c.parse_event(raw)
            except c.ContractError as exc:
                log.warning("router.bad_event error=%s", exc)  # the pipeline's output: not ours
                continue
            if event.type in ROUTED_TYPES:
                if event.type == c.CONVERSATION_REOPENED:
                    await conversations.unclassify(
                        self.store, event.data.conversation_id, event.data.reopened_at
                    )
                to_route.append(event.data.conversation_id)
            elif event.type == c.INTERACTION_RECORDED and event.data.conversation_id:
                recorded.append(event.data)
            elif event.type == c.REPLY_STATUS:
                statuses.append(event.data)
            elif event.type == c.CONVERSATION_TYPING and event.data.who == "visitor":
                typing.append(event.data)
            if event.type in CHANGE_TYPES and event.data.conversation_id:
                changed.append(event.data.conversation_id)
        # Pushes about conversations this batch does not route go out at once: an agent's
        # follow-up must not wait for other customers' conversations to be placed (under
        # load a routing pass takes a second). What concerns a conversation being routed is
        # pushed after its pass, so the agent just offered it hears of it too.
        routed = set(to_route)
        later = [r for r in recorded if r.conversation_id in routed]
        at_once = [r for r in recorded if r.conversation_id not in routed]

        async def route_then_push() -> None:
            # the new ones first: older waiting ones exist only while nobody with room can
            # take them, and the drain after covers those
            await self.route_many(to_route)
            self.spawn(self.drain())
            await self._push(later, [], [], [k for k in changed if k in routed])

        await asyncio.gather(
            route_then_push() if to_route else asyncio.sleep(0),
            self._push(at_once, statuses, typing, [k for k in changed if k not in routed]),
        )

    async def _push(
        self, recorded: list[Any], statuses: list[Any], typing: list[c.Typing], changed: list[str]
    ) -> None:
        if not self.sockets.connected():
            return
        if recorded:
            await self._push_messages(recorded)
        if statuses:
            await self._push_statuses(statuses)
        if typing:
            await self._push_typing(typing)
        await self.announce(changed)

    async def announce(self, conversation_ids: Iterable[str]) -> None:
        """Tell the connected agents who may list these conversations that they changed
        (opened, new message, assigned, transferred, resolved); their consoles read their
        lists again. Only the id and state travel: what else they see, the API decides."""
        ids = list(dict.fromkeys(conversation_ids))
        if not ids or not self.sockets.connected():
            return
        for conv in (await conversations.get_many(self.store, ids)).values():
            payload = {
                "type": "conversation.changed",
                "conversation_id": conv["_id"],
                "state": conv.get("state"),
            }
            for agent_id in self.sockets.watchers(conv):
                await self.sockets.notify(agent_id, payload)

    async def _push_statuses(self, statuses: list[Any]) -> None:
        """Delivery outcome of replies (sent, retrying, failed with the reason) to the agent
        who has the conversation."""
        convs = await conversations.get_many(
            self.store, list({s.conversation_id for s in statuses})
        )
        for s in statuses:
            agent = (convs.get(s.conversation_id) or {}).get("assignee")
            await self.sockets.notify(
                agent,
                {
                    "type": "reply.status",
                    "conversation_id": s.conversation_id,
                    "reply_id": s.reply_id,
                    "status": s.status,
                    "error": s.error,
                },
            )

    async def _push_typing(self, signals: list[c.Typing]) -> None:
        """A visitor typing → ``{"type": "typing", "who": "visitor", …}`` to the agent who holds
        (or is offered) the conversation. Only the latest state per conversation is sent."""
        latest = {t.conversation_id: t for t in signals if t.conversation_id}
        convs = await conversations.get_many(self.store, list(latest))
        for conv_id, t in latest.items():
            conv = convs.get(conv_id) or {}
            agent = conv.get("assignee") or conv.get("offer_agent")
            if self.sockets.has(agent):
                await self.sockets.notify(
                    agent,
                    {
                        "type": "typing",
                        "conversation_id": conv_id,
                        "customer_id": conv.get("customer_id"),
                        "channel": t.channel,
                        "who": "visitor",
                        "state": t.state,
                        "at": t.at,
                    },
                )

    async def _push_messages(self, recorded: list[Any]) -> None:
        convs = await conversations.get_many(
            self.store, list({r.conversation_id for r in recorded})
        )
        for r in recorded:
            conv = convs.get(r.conversation_id) or {}
            agent = conv.get("assignee") or conv.get("offer_agent")
            if not self.sockets.has(agent):
                continue
            m = r.message
            await self.sockets.notify(
                agent,
                {
                    "type": "message",
                    "conversation_id": r.conversation_id,
                    "interaction_id": r.interaction_id,
                    "customer_id": r.customer_id,
                    "channel": m.channel,
                    "direction": m.direction,
                    "occurred_at": m.occurred_at,
                    "subject": m.subject,
                    "text": m.text,
                },
            )

    # ------------------------------------------------------------------ sweeps
    async def _sweep_loop(self) -> None:
        try:  # conversations whose clocks started without a timer (an older version)
            armed = await sla.arm_active(self.store)
            log.info("router.sla_timers_armed conversations=%d", armed)
        except PyMongoError as exc:
            log.warning("router.sla_arm_error error=%s", exc)
        ticks = 0
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            ticks += 1
            try:
                await self.sweep()
                if ticks % SLA_EVERY == 0:
                    await sla.sweep(self)
                if ticks % max(1, int(self.config.offer_timeout / self.config.sweep_interval)) == 0:
                    await self.return_leaked_holds()
            except (PyMongoError, KafkaError) as exc:
                log.warning("router.sweep_error error=%s", exc)

    async def _heartbeat_loop(self) -> None:
        """Sockets open here are signs of life: keep their agents' ``seen_at`` fresh."""
        while True:
            await asyncio.sleep(self.config.presence_timeout / 3)
            with contextlib.suppress(PyMongoError):
                await agents.heartbeat(self.store, self.sockets.connected(), c.utcnow())

    async def sweep(self) -> None:
        """Expire overdue offers, take silent agents offline, route what is still waiting."""
        now = c.utcnow()
        for offer in await offers.expired(self.store, now):
            await self._close_offer(offer, "expired")
        cutoff = now - timedelta(seconds=self.config.presence_timeout)
        for gone in await agents.stale(self.store, cutoff):
            if await agents.mark_gone(self.store, gone["_id"], gone["seen_at"]):
                log.info("router.agent_gone agent=%s", gone["_id"])
                await self.withdraw_offers(gone["_id"])
        await self.drain()

    async def return_leaked_holds(self) -> int:
        """Give back capacity held for conversations the agent no longer has (a crash between
        reserving and offering). Only holds older than an offer's whole life are considered."""
        before = c.utcnow() - timedelta(seconds=self.config.offer_timeout + LEAK_GRACE)
        suspects: list[tuple[str, str, str]] = []
        for doc in await agents.with_holds(self.store):
            for channel, held in (doc.get("holds") or {}).items():
                suspects += [(doc["_id"], channel, h["id"]) for h in held if h["at"] < before]
        if not suspects:
            return 0
        real = await conversations.held_by(self.store, [(a, k) for a, _, k in suspects])
        returned = 0
        for agent_id, channel, conv_id in suspects:
            if (agent_id, conv_id) not in real:
                if await agents.release(self.store, agent_id, channel, conv_id, before=before):
                    returned += 1
                    log.warning("router.hold_returned agent=%s conversation=%s", agent_id, conv_id)
        if returned:
            self.spawn(self.drain())
        return returned

    # ------------------------------------------------------------------ routing
    async def drain(self) -> None:
        """Offer waiting conversations in queue order to agents with room (coalesced: a call
        while a drain runs makes that drain go round once more)."""
        if self._draining:
            self._drain_again = True
            return
        self._draining = True
        try:
            for _ in range(DRAIN_PASSES):
                self._drain_again = False
                with DECISION.time():
                    # cheapest check first: every accept and resolve drains, and mostly the
                    # queue is empty; reading the agents costs SecantusDB 6 ms for 50 of them,
                    # reading the queue sorts all of it (300 ms for 5,000 waiting)
                    if not self._nothing_waiting():
                        pool = await agents.online(self.store)
                        if _has_room(pool):
                            waiting = await self._waiting()
                            if waiting:
                                made = await self._route_docs(waiting, pool=pool)
                                self._forget({o["conversation_id"] for o in made})
                if not self._drain_again:
                    break
        finally:
            self._draining = False
        if self._drain_again:  # triggers keep coming: go on in the background, free the caller
            self.spawn(self.drain())

    def _nothing_waiting(self) -> bool:
        """The copy of the queue is fresh and empty: a drain has nothing to do."""
        loop = asyncio.get_running_loop()
        return (
            self._queue is not None
            and not self._queue
            and loop.time() - self._queue_at <= QUEUE_TTL
        )

    async def _waiting(self) -> list[Doc]:
        """The head of the waiting queue. Reading it costs the whole queue on some servers
        (the sort sees every match), so it is read at most every QUEUE_TTL seconds; between
        reads the router works from that copy and the claims' guards catch what went stale."""
        loop = asyncio.get_running_loop()
        if self._queue is None or loop.time() - self._queue_at > QUEUE_TTL:
            self._queue = await conversations.waiting(self.store, limit=DRAIN_PAGE)
            self._queue_at = loop.time()
        return list(self._queue)

    def requeued(self, conv: Doc | None) -> None:
        """A conversation went back to waiting here: the next drain considers it."""
        if conv is not None and _is_waiting(conv):
            self._remember([conv])

    def _remember(self, docs: list[Doc]) -> None:
        """Conversations seen waiting outside a drain join the copy of the queue, so capacity
        freed before the next read still pulls them."""
        if self._queue is not None and docs:
            known = {d["_id"] for d in self._queue}
            self._queue += [d for d in docs if d["_id"] not in known]

    def _forget(self, ids: set[str]) -> None:
        if self._queue is not None and ids:
            self._queue = [d for d in self._queue if d["_id"] not in ids]

    async def route(self, conversation_id: str, exclude: Sequence[str] = ()) -> Doc | None:
        """Offer one conversation to the best agent now; None if nobody can take it."""
        made = await self.route_many([conversation_id], exclude)
        return made[0] if made else None

    async def route_many(self, ids: Sequence[str], exclude: Sequence[str] = ()) -> list[Doc]:
        docs = await conversations.get_many(self.store, list(dict.fromkeys(ids)))
        waiting = [d for d in docs.values() if _is_waiting(d)]
        if not waiting:
            return []
        # just opened or reopened: those the worker classified have their SLA clocks running
        # (the others get their timers when classified); their timers are written while the
        # pass runs (a timer does not depend on who is offered the conversation)
        _, made = await together(
            sla.arm(self.store, [d for d in waiting if d.get("classified_at") is not None]),
            self._route_docs(waiting, exclude, fresh=True),
            at_once=len(waiting) <= AT_ONCE_MAX,
        )
        placed = {o["conversation_id"] for o in made}
        self._remember([d for d in waiting if d["_id"] not in placed])
        return made

    async def _route_docs(
        self,
        docs: list[Doc],
        exclude: Sequence[str] = (),
        pool: list[Doc] | None = None,
        *,
        fresh: bool = False,
    ) -> list[Doc]:
        """Decide and offer; ``fresh`` docs were just read (no need to read them again).

        One pass at a time in this process: a new conversation's pass and a drain running
        together would plan the same conversations and the same agents' room, and the loser
        of each claim would pay for a hold, an offer, its cancel and the release (a third of
        the router's writes at 20 new conversations/s). Routers in other processes are kept
        apart by the claims' guards. What a waiting pass read may have changed meanwhile:
        it reads it again."""
        waited = self._deciding.locked()
        began = time.monotonic()
        async with self._deciding:
            if waited:
                pool, fresh = None, False
            deciding = time.monotonic()
            PASS.labels("wait").observe(deciding - began)
            try:
                return await self._decide(docs, exclude, pool, fresh)
            finally:
                PASS.labels("decide").observe(time.monotonic() - deciding)

    async def _decide(
        self, docs: list[Doc], exclude: Sequence[str], pool: list[Doc] | None, fresh: bool
    ) -> list[Doc]:
        made: list[Doc] = []
        window = timedelta(seconds=self.config.sticky_window)
        # classified even when nobody has room: queue order and SLA clocks depend on it
        docs = await self._classified_many(docs)
        # a few just-opened conversations: who served their customers is read alongside the
        # agents (one round trip less), unless the last pass found nobody with room (then the
        # read would likely be wasted: with nobody online, every pass would pay for it)
        served: dict[str, tuple[str, Any]] | None = None
        for round_ in range(RESERVE_ROUNDS):
            if pool is None or round_ > 0:
                if fresh and round_ == 0 and len(docs) <= AT_ONCE_MAX and self._room:
                    online, served = await together(
                        agents.online(self.store),
                        conversations.last_served_many(
                            self.store, [d["customer_id"] for d in docs], c.utcnow() - window
                        ),
                    )
                    pool = online
                else:
                    pool = await agents.online(self.store)
                    served = None
            self._room = _has_room(pool)
            if not self._room:
                return made  # nobody has room: nothing to decide
            views = {d["_id"]: self._view(d, exclude) for d in docs}
            now = c.utcnow()
            agent_views = [agent_view(a) for a in pool]
            by_id: dict[str, Doc] = {}
            for _check in range(3):
                first = policy.plan(views.values(), agent_views, now, window)
                # the copy may be stale: keep what is still waiting, as it is now; slots
                # planned for conversations gone elsewhere are planned again at once
                planned_ids = [v.conversation_id for v, _ in first if v.conversation_id
                               not in by_id]
                if fresh and round_ == 0:
                    current = {d["_id"]: d for d in docs if d["_id"] in set(planned_ids)}
                else:
                    current = await conversations.get_many(self.store, planned_ids)
                by_id.update({k: d for k, d in current.items() if _is_waiting(d)})
                gone = set(planned_ids) - set(by_id)
                if not gone:
                    break
                self._forget(gone)
                for k in gone:
                    views.pop(k, None)
            first = [(self._view(by_id[v.conversation_id], exclude), cands)
                     for v, cands in first if v.conversation_id in by_id]
            if not first:
                return made
            # stickiness matters only for conversations someone can take: look it up for those
            if served is None:
                served = await conversations.last_served_many(
                    self.store,
                    [by_id[v.conversation_id]["customer_id"] for v, _ in first],
                    now - window,
                )
            stuck = [self._with_sticky(v, served.get(by_id[v.conversation_id]["customer_id"]))
                     for v, _ in first]
            planned = policy.plan(stuck, [agent_view(a) for a in pool], now, window)
            contended = []
            taken = []
            for conv_id, result in await self._offer_planned(planned, by_id):
                if isinstance(result, dict):
                    made.append(result)
                elif result == "contended":
                    contended.append(by_id[conv_id])
                else:
                    taken.append((conv_id, result))
            self._forget({k for k, _ in taken})
            if not contended:
                return made
            docs = contended  # every candidate was taken meanwhile: decide again, fresh
        log.info("router.contended conversations=%d", len(docs))
        self._remember(docs)
        return made

    async def _offer_planned(
        self,
        planned: list[tuple[policy.ConversationView, list[policy.AgentView]]],
        by_id: dict[str, Doc],
    ) -> list[tuple[str, Doc | str]]:
        """Offer what a pass planned in a few round trips whatever its size: each agent's units
        held in one guarded write, then :meth:`make_offers` for all of them. An agent whose
        units could not all be held (its room changed since the plan) gets its conversations
        one by one, down the candidate list."""
        groups: dict[tuple[str, str], list[tuple[policy.ConversationView, list[policy.AgentView]]]]
        groups = {}
        for item in planned:
            groups.setdefault((item[1][0].agent_id, item[0].channel), []).append(item)
        now = c.utcnow()
        held = await asyncio.gather(
            *(
                agents.reserve_many(
                    self.store,
                    agent_id,
                    channel,
                    items[0][1][0].capacity.get(channel, 0),
                    [v.conversation_id for v, _ in items],
                    now,
                )
                for (agent_id, channel), items in groups.items()
            )
        )
        batch: list[tuple[Doc, str]] = []
        lanes: dict[str, list[tuple[policy.ConversationView, list[policy.AgentView]]]] = {}
        for ok, ((agent_id, _), items) in zip(held, groups.items(), strict=True):
            if ok:
                batch += [(by_id[v.conversation_id], agent_id) for v, _ in items]
            else:
                lanes.setdefault(agent_id, []).extend(items)
        results: list[tuple[str, Doc | str]] = []
        if batch:
            offered = await self.make_offers(batch, c.utcnow())
            results += [(conv["_id"], offer or "taken")
                        for (conv, _), offer in zip(batch, offered, strict=True)]
        # one agent's offers in queue order (its socket sees them so), agents in parallel
        for lane in await asyncio.gather(*(self._lane(items, by_id) for items in lanes.values())):
            results += lane
        return results

    async def _lane(
        self,
        items: list[tuple[policy.ConversationView, list[policy.AgentView]]],
        by_id: dict[str, Doc],
    ) -> list[tuple[str, Doc | str]]:
        return [
            (v.conversation_id, await self._offer(by_id[v.conversation_id], v, cands))
            for v, cands in items
        ]

    async def _classified_many(self, docs: list[Doc]) -> list[Doc]:
        """The conversations with their routing classification (computed and stored once),
        in order; left out while a conversation's first message is not recorded yet (the
        ingest worker writes the conversation a moment before the message, and emits
        conversation.opened after both). However many there are: one read of their messages,
        one of their customers and one write."""
        todo = [d for d in docs if d.get("classified_at") is None]
        if not todo:
            return docs
        store = self.store
        ids = [d["_id"] for d in todo]
        messages = await find_in(
            store.interactions, "conversation_id", ids, projection=MESSAGE_FIELDS
        )
        last: dict[str, Doc] = {}  # the latest customer message of each conversation
        for m in messages:
            cur = last.get(m["conversation_id"])
            if m.get("direction") == "in" and (
                cur is None or (m["occurred_at"], m["_id"]) > (cur["occurred_at"], cur["_id"])
            ):
                last[m["conversation_id"]] = m
        # merged meanwhile: the survivor's segment counts
        custs = await customers.get_many(store, {d["customer_id"] for d in todo})
        now = c.utcnow()
        fields: dict[str, Doc] = {}
        for conv in todo:
            msg = last.get(conv["_id"])
            opened = conv.get("reopened_at") or conv.get("opened_at")
            if msg is None and opened is not None and now - opened < UNRECORDED_GRACE:
                continue
            cust = custs.get(conv["customer_id"]) or {}
            fields[conv["_id"]] = classification(self.config, conv, msg, cust.get("segment"), now)
            # what the offer will show, read once
            self._seen[conv["_id"]] = (cust, (msg or {}).get("text") or (msg or {}).get("subject"))
        if len(self._seen) > SEEN_MAX:
            self._seen.clear()
        if await conversations.classify_many(store, fields):
            stored = {d["_id"]: {**d, **fields[d["_id"]]} for d in todo if d["_id"] in fields}
        else:  # another router classified some first: theirs count, as stored
            stored = await conversations.get_many(store, list(fields))
        await sla.arm(store, stored.values())  # their SLA clocks start now
        # in order; those still waiting for their first message are left out
        return [stored.get(d["_id"], d) for d in docs
                if d.get("classified_at") is not None or d["_id"] in stored]

    def _view(self, conv: Doc, exclude: Sequence[str] = ()) -> policy.ConversationView:
        due = conv.get("resolution_due") if conv.get("first_response_at") else conv.get(
            "first_response_due"
        )
        return policy.ConversationView(
            conversation_id=conv["_id"],
            channel=conv["channel"],
            waiting_since=conv.get("reopened_at") or conv.get("opened_at") or c.utcnow(),
            priority=int(conv.get("priority") or 0),
            required_skills=frozenset(conv.get("required_skills") or ()),
            team=conv.get("team"),
            sla_due=due,
            passed=frozenset([*(conv.get("passed") or ()), *exclude]),
        )

    @staticmethod
    def _with_sticky(
        view: policy.ConversationView, last: tuple[str, Any] | None
    ) -> policy.ConversationView:
        if last is None:
            return view
        return replace(view, sticky_agent=last[0], sticky_at=last[1])

    async def _offer(
        self, conv: Doc, view: policy.ConversationView, candidates: list[policy.AgentView]
    ) -> Doc | str:
        """Reserve the first candidate that still has room, then offer. Returns the offer,
        "taken" if the conversation went elsewhere, "contended" if every candidate was full."""
        async with self._gate:
            for agent in candidates[:MAX_CANDIDATES]:
                cap = agent.capacity.get(view.channel, 0)
                now = c.utcnow()
                held = await agents.reserve(
                    self.store, agent.agent_id, view.channel, cap, view.conversation_id, now
                )
                if held is None:
                    continue
                # the offer's life starts once the unit is held (the reservation may have
                # waited for one to be given back)
                return await self.make_offer(conv, agent.agent_id, c.utcnow()) or "taken"
            return "contended"

    async def make_offer(
        self, conv: Doc, agent_id: str, now: Any, *, transfer: Doc | None = None
    ) -> Doc | None:
        """Write the offer and claim the conversation for it; the agent's unit is already held.

        On a lost claim the offer is cancelled and the unit given back. A transfer moves the
        conversation itself (router/actions.py) and passes ``transfer``.
        """
        offer = self._new_offer(conv, agent_id, now, transfer)
        # the offer exists before the claim: a crash in between leaves an offer that expires
        await offers.create(self.store, offer)
        if transfer is not None:
            return offer
        if await conversations.claim_for_offer(
            self.store, conv["_id"], offer["_id"], agent_id
        ) is None:
            await offers.transition(self.store, offer["_id"], "cancelled", now, fetch=False)
            await agents.release(self.store, agent_id, conv["channel"], conv["_id"])
            return None
        if not await self.still_pending(offer, conv["_id"]):
            return None
        OFFERS.labels("offered").inc()
        await self.push_offer(offer, conv)
        return offer

    def _new_offer(self, conv: Doc, agent_id: str, now: Any, transfer: Doc | None) -> Doc:
        return {
            "_id": str(uuid.uuid4()),
            "conversation_id": conv["_id"],
            "customer_id": conv["customer_id"],
            "channel": conv["channel"],
            "agent_id": agent_id,
            "state": "pending",
            "created_at": now,
            "expires_at": now + timedelta(seconds=self.config.offer_timeout),
            "transfer": transfer,
        }

    async def make_offers(self, pairs: list[tuple[Doc, str]], now: Any) -> list[Doc | None]:
        """:meth:`make_offer` for many (conversation, agent) pairs whose units are held, in
        the same order of steps but one write or read per step for all of them."""
        store = self.store
        made = [self._new_offer(conv, agent_id, now, None) for conv, agent_id in pairs]
        await offers.create_many(store, made)
        won = await conversations.claim_many(
            store, [(o["conversation_id"], o["_id"], o["agent_id"]) for o in made]
        )
        lost = [o for o in made if o["conversation_id"] not in won]
        if lost:
            await offers.cancel_many(store, [o["_id"] for o in lost], now)
            by_agent: dict[tuple[str, str], list[str]] = {}
            for o in lost:
                by_agent.setdefault((o["agent_id"], o["channel"]), []).append(o["conversation_id"])
            await asyncio.gather(
                *(agents.release_many(store, a, ch, ids) for (a, ch), ids in by_agent.items())
            )
        kept = [o for o in made if o["conversation_id"] in won]
        convs = {conv["_id"]: conv for conv, _ in pairs}
        shown = [o for o in kept if self.sockets.has(o["agent_id"])]
        # whether each is still pending (see still_pending) and what its card shows, together
        states, described = await asyncio.gather(
            offers.states(store, [o["_id"] for o in kept]), self.describe_many(shown, convs)
        )
        closed = [o for o in kept if states.get(o["_id"]) != "pending"]
        for o in closed:  # closed before the claim landed
            await self._unclaim(o)
        live = {o["_id"] for o in kept} - {o["_id"] for o in closed}
        OFFERS.labels("offered").inc(len(live))
        for o, payload in zip(shown, described, strict=True):
            if o["_id"] in live:
                await self.sockets.notify(o["agent_id"], {"type": "offer", "offer": payload})
        return [o if o["_id"] in live else None for o in made]

    async def still_pending(self, offer: Doc, conversation_id: str) -> bool:
        """After a claim: if the offer was closed (presence lost, expiry) before the claim
        landed, its closer found nothing to release; the claimer releases the conversation."""
        current = await offers.get(self.store, offer["_id"])
        if current is not None and current["state"] == "pending":
            return True
        await self._unclaim(offer)
        return False

    async def _unclaim(self, offer: Doc) -> None:
        released = await conversations.release_offer(
            self.store, offer["conversation_id"], offer["_id"], passed=offer["agent_id"],
            fetch=True,
        )
        self.requeued(released)
        self.spawn(self.drain())

    async def push_offer(self, offer: Doc, conv: Doc | None = None) -> None:
        if self.sockets.has(offer["agent_id"]):
            payload = {"type": "offer", "offer": await self.describe(offer, conv)}
            await self.sockets.notify(offer["agent_id"], payload)

    async def describe(self, offer: Doc, conv: Doc | None = None) -> dict[str, Any]:
        """What an agent sees in an offer: the conversation and who the customer is."""
        convs = {conv["_id"]: conv} if conv is not None and "_id" in conv else {}
        return (await self.describe_many([offer], convs))[0]

    async def describe_many(
        self, offers_: Sequence[Doc], convs: dict[str, Doc] | None = None
    ) -> list[dict[str, Any]]:
        """:meth:`describe` for several offers: the conversations not given and the customers
        not seen while classifying are read in one query each."""
        store = self.store
        convs = dict(convs or {})
        missing = [o["conversation_id"] for o in offers_ if o["conversation_id"] not in convs]
        if missing:
            convs.update(await conversations.get_many(store, missing))
        seen = {o["_id"]: self._seen.pop(o["conversation_id"], None) for o in offers_}
        unseen = [o for o in offers_ if seen[o["_id"]] is None]
        # merged meanwhile: the survivor is shown
        custs = await customers.get_many(store, {o["customer_id"] for o in unseen})

        async def shown(offer: Doc) -> tuple[Doc, str | None]:
            known = seen[offer["_id"]]
            if known is not None:
                return known[0] or {}, known[1]
            conv = convs.get(offer["conversation_id"]) or {}
            # what it was classified on (stored when it was opened), unless it is a transfer
            text = conv.get("preview") if offer.get("transfer") is None else None
            if text is None:
                last = await store.interactions.find_one(
                    {"conversation_id": offer["conversation_id"]}, sort=[("occurred_at", -1)]
                )
                text = (last or {}).get("text") or (last or {}).get("subject")
            return custs.get(offer["customer_id"]) or {}, text

        out = []
        for offer, (cust, text) in zip(
            offers_, await asyncio.gather(*(shown(o) for o in offers_)), strict=True
        ):
            conv = convs.get(offer["conversation_id"]) or {}
            out.append({
                "id": offer["_id"],
                "conversation_id": offer["conversation_id"],
                "customer": {
                    "id": cust.get("_id"),
                    "display_name": cust.get("display_name"),
                    "segment": cust.get("segment"),
                },
                "channel": conv.get("channel"),
                "priority": conv.get("priority", 0),
                "language": conv.get("language"),
                "first_response_due": conv.get("first_response_due"),
                "preview": (text or "")[:200],
                "transfer": offer.get("transfer"),
                "created_at": offer["created_at"],
                "expires_at": offer["expires_at"],
            })
        return out

    # ------------------------------------------------------------------ offers
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
        if conv is None:  # resolved or taken by a supervisor meanwhile
            await agents.release(self.store, agent_id, offer["channel"], offer["conversation_id"])
            self.spawn(self.drain())
            raise RoutingError(409, "conflict", "the conversation was closed or moved meanwhile")
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
        offer = await offers.get(self.store, offer_id)
        if offer is None or offer.get("agent_id") != agent_id:
            raise self._gone(offer, agent_id)
        if not await self._close_offer(offer, "declined", notify=False):
            raise self._gone(await offers.get(self.store, offer_id), agent_id)

    async def _close_offer(self, offer: Doc, outcome: str, *, notify: bool = True) -> bool:
        """Close a pending offer (declined, expired, withdrawn); the winner gives the unit
        back and routes the conversation again, to someone else first."""
        now = c.utcnow()
        if await offers.transition(self.store, offer["_id"], outcome, now, fetch=False) is None:
            return False
        OFFERS.labels(outcome).inc()
        agent_id, conv_id = offer["agent_id"], offer["conversation_id"]
        await agents.release(self.store, agent_id, offer["channel"], conv_id)
        released = await conversations.release_offer(
            self.store, conv_id, offer["_id"], passed=agent_id, fetch=True
        )
        self.requeued(released)
        if notify:
            await self.sockets.notify(
                agent_id, {"type": f"offer.{outcome}", "offer_id": offer["_id"]}
            )
        self.spawn(self.drain())
        return True

    async def withdraw_offers(self, agent_id: str) -> None:
        """The agent cannot accept now (gone, away): pass their pending offers on."""
        for offer in await offers.pending_for(self.store, agent_id):
            await self._close_offer(offer, "withdrawn")

    @staticmethod
    def _gone(offer: Doc | None, agent_id: str) -> RoutingError:
        if offer is None or offer.get("agent_id") != agent_id:
            return RoutingError(404, "not_found", "offer not found")
        return RoutingError(409, "conflict", f"offer is {offer['state']}, not pending")

    # ------------------------------------------------------------------ presence
    async def set_presence(self, agent_id: str, status: str) -> None:
        """online / away / offline. Leaving online passes pending offers on; coming online
        pulls waiting conversations."""
        if not await agents.set_status(self.store, agent_id, status, c.utcnow()):
            raise RoutingError(404, "not_found", "agent not found")
        if status == "online":
            self.spawn(self.drain())
        else:
            await self.withdraw_offers(agent_id)

    async def connected(
        self, agent_id: str, ws: Socket, role: str = "agent", teams: tuple[str, ...] = ()
    ) -> None:
        if self.sockets.add(agent_id, role, ws, teams):
            await agents.set_status(self.store, agent_id, "online", c.utcnow())
        pending = await offers.pending_for(self.store, agent_id)
        for payload in await self.describe_many(pending):
            await send_json(ws, {"type": "offer", "offer": payload})
        self.spawn(self.drain())

    async def disconnected(self, agent_id: str, ws: Socket) -> None:
        if not self.sockets.remove(agent_id, ws):
            return
        # an agent who left cannot accept: hand their pending offers on at once
        await agents.set_status(self.store, agent_id, "offline", c.utcnow())
        await self.withdraw_offers(agent_id)
