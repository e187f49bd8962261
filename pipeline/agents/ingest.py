"""The ingest agent: message.received events → identities, customers, timeline, conversations.

A batch is processed as one idempotent unit: every write is keyed on a natural or
deterministic id, every emitted event has a deterministic id, so replaying a batch after a
crash changes nothing and re-emits the same events. The caller acknowledges the batch's
offsets only after :meth:`Ingestor.process` returned, i.e. after the store and the broker
acknowledged everything. Records that can never succeed go to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure

from pipeline import contract as c
from pipeline import topics
from pipeline.agents.resolve import resolve
from pipeline.publish import Publisher, Record
from pipeline.together import AT_ONCE_MAX, together
from router.classification import Config as RoutingConfig
from router.classification import classification
from store import conversations, customers, interactions, merges
from store.mongo import Doc, Store
from unify.identifiers import InvalidIdentifier, normalize
from unify.resolver import Decision, Policy, Sighting
from unify.text import name_tokens

log = logging.getLogger("omnihub.ingest")

SOURCE = "/omnihub/pipeline"

EVENTS = Counter("omnihub_ingest_events_total", "records handled by ingest", ["outcome"])
BATCH_SECONDS = Histogram(
    "omnihub_ingest_batch_seconds",
    "one ingest batch, from read to its events acknowledged by the broker",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STAGE_SECONDS = Histogram(
    "omnihub_ingest_stage_seconds",
    "one ingest batch's stages: write = the store's part, publish = its events until the "
    "broker acknowledged them (waits for the batch before, events leave in order); the steps "
    "of write: resolve (identities, merges, suggestions), customers, conversations, timeline "
    "(interactions and conversation activity), settle (concurrent merges and unmerges)",
    ["stage"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "omnihub_ingest_batch_size",
    "records per ingest batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
RETRIES = Counter("omnihub_store_retries_total", "transient failures retried", ["stage"])

TRANSIENT = (ConnectionFailure, KafkaError, asyncio.TimeoutError)


@dataclass(frozen=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class _Item:
    raw: RawRecord
    event: c.CloudEvent[Any]
    message: c.Message
    identifiers: tuple[str, ...]
    claimed: tuple[str, ...] = ()


@dataclass
class BatchResult:
    stored: int = 0
    deadlettered: int = 0
    emitted: int = 0
    dead: list[c.DeadLetter] = field(default_factory=list)
    events: list[Record] = field(default_factory=list)  # to publish once the store has it
    started: float = 0.0
    written: float = 0.0
    size: int = 0


class Ingestor:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        *,
        default_region: str = "IR",
        retry_max: float = 10.0,
        policy: Policy | None = None,
        reopen_window: float = 7 * 86400,
        routing: RoutingConfig | None = None,
    ) -> None:
        """``routing``: classify the conversations this worker opens in the write that opens
        them (the router's configuration); without it the router classifies them."""
        self.store = store
        self.routing = routing
        self.reopen_window = reopen_window
        self.policy = policy or Policy()
        self.publisher = publisher
        self.default_region = default_region
        self.retry_max = retry_max

    # ------------------------------------------------------------------ entry point
    async def process(self, records: Sequence[RawRecord]) -> BatchResult:
        """Handle one batch; returns only when its effects are durable (retries transients)."""
        return await self.publish(await self.write(records))

    async def write(self, records: Sequence[RawRecord]) -> BatchResult:
        """The store part of a batch: everything written, the events to emit computed.

        The worker may write the next batch while this one's events are on their way
        (:meth:`publish`); a batch is acknowledged only after both returned."""
        result = BatchResult(started=time.perf_counter(), size=len(records))
        items: list[_Item] = []
        for raw in records:
            item = self._decode(raw, result)
            if item is not None:
                items.append(item)
        if items:

            async def apply() -> BatchResult:  # a retry starts over: nothing counted twice
                attempt = BatchResult()
                await self._apply_or_split(items, attempt)
                return attempt

            done: BatchResult = await self._retrying("apply", apply)
            result.stored += done.stored
            result.deadlettered += done.deadlettered
            result.dead += done.dead
            result.events += done.events
        result.written = time.perf_counter()
        STAGE_SECONDS.labels("write").observe(result.written - result.started)
        return result

    async def publish(self, result: BatchResult) -> BatchResult:
        """The batch's events and dead letters, acknowledged by the broker (retries
        transients; the events have deterministic ids, so a retry re-emits the same ones)."""
        if result.events:
            await self._retrying("publish", lambda: self.publisher.publish(result.events))
            result.emitted += len(result.events)
        if result.dead:
            await self._retrying("deadletter", lambda: self._publish_dead(result.dead))
        EVENTS.labels("stored").inc(result.stored)
        EVENTS.labels("deadletter").inc(result.deadlettered)
        BATCH_SIZE.observe(result.size)
        done = time.perf_counter()
        STAGE_SECONDS.labels("publish").observe(done - (result.written or result.started))
        BATCH_SECONDS.observe(done - result.started)
        return result

    async def _retrying(self, stage: str, step: Any) -> Any:
        delay = 0.1
        while True:
            try:
                return await step()
            except TRANSIENT as exc:
                RETRIES.labels(stage).inc()
                log.warning("ingest.retry stage=%s error=%s delay=%.1fs", stage, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)

    # ------------------------------------------------------------------ decode
    def _decode(self, raw: RawRecord, result: BatchResult) -> _Item | None:
        try:
            event = c.parse_event(raw.value, expect=c.MESSAGE_RECEIVED)
        except c.ContractError as exc:
            self._dead(raw, "validate", str(exc), result)
            return None
        message: c.Message = event.data
        idents: list[str] = []
        claimed: list[str] = []
        reasons: list[str] = []
        for ident in message.sender:
            try:
                norm = normalize(ident.kind, ident.value, default_region=self.default_region)
            except InvalidIdentifier as exc:
                reasons.append(f"{ident.kind}: {exc}")
                continue
            target = idents if ident.assurance == "channel" else claimed
            if norm not in target:
                target.append(norm)
        if not idents:
            why = "; ".join(reasons) or "no channel-assured sender identifier"
            self._dead(raw, "identify", f"no usable sender identifier ({why})", result)
            return None
        return _Item(
            raw, event, message, tuple(idents), tuple(c for c in claimed if c not in idents)
        )

    def _dead(self, raw: RawRecord, stage: str, error: str, result: BatchResult) -> None:
        log.warning(
            "ingest.deadletter stage=%s topic=%s partition=%d offset=%d error=%s",
            stage,
            raw.topic,
            raw.partition,
            raw.offset,
            error,
        )
        result.deadlettered += 1
        result.dead.append(
            c.DeadLetter(
                stage=stage,
                error=error[:2000],
                topic=raw.topic,
                partition=raw.partition,
                offset=raw.offset,
                key_b64=base64.b64encode(raw.key).decode() if raw.key is not None else None,
                value_b64=base64.b64encode(raw.value).decode(),
                failed_at=c.utcnow(),
            )
        )

    async def _publish_dead(self, dead: list[c.DeadLetter]) -> None:
        records = []
        for d in dead:
            ev = c.envelope(
                c.MESSAGE_DEADLETTERED,
                d,
                id=c.deterministic_id(d.topic, str(d.partition), str(d.offset), "dead"),
                source=SOURCE,
                subject=f"{d.topic}/{d.partition}/{d.offset}",
            )
            records.append(Record(topics.DEADLETTER, None, ev.to_json()))
        await self.publisher.publish(records)

    # ------------------------------------------------------------------ apply
    async def _apply_or_split(self, items: list[_Item], result: BatchResult) -> None:
        """Apply the batch; if the store rejects it for good, apply each half on its own, down
        to the bad records, which go to the dead-letter topic. One bad record in a batch of n
        costs about 2·log2(n) applies, not n (every apply is idempotent: a half written before
        the failure is written again as a replay)."""
        try:
            result.events += await self._apply(items)
            result.stored += len(items)
        except OperationFailure as exc:  # includes write errors: not transient
            if len(items) == 1:
                self._dead(items[0].raw, "store", f"store rejected the record: {exc}", result)
                return
            log.warning("ingest.split size=%d error=%s", len(items), exc)
            half = len(items) // 2
            await self._apply_or_split(items[:half], result)
            await self._apply_or_split(items[half:], result)

    async def _apply(self, items: list[_Item]) -> list[Record]:
        now = c.utcnow()
        store = self.store
        lap = _Laps()
        sightings = [
            Sighting(i.event.id, i.identifiers, i.message.occurred_at, i.claimed) for i in items
        ]
        names = {i.event.id: i.message.display_name for i in items}
        # a replayed interaction stays where its first attempt stored it: read alongside
        small = len(items) <= AT_ONCE_MAX  # see pipeline/together.py
        resolved, stored = await together(
            resolve(store, sightings, self.policy, names),
            interactions.stored(store, [i.event.id for i in items]),
            at_once=small,
        )
        by_event = resolved.decisions
        recorded = {eid: d.get("conversation_id") for eid, d in stored.items()}
        lap("resolve")

        # customers: the shells created for this batch come alive, newly linked identifiers
        # are added; a customer the batch only wrote to is not touched
        first_event: dict[str, _Item] = {}
        new_idents: dict[str, list[str]] = {}
        origins: dict[str, str] = {}  # the event that created each customer
        for item in items:
            d = by_event[item.event.id]
            first_event.setdefault(d.customer_id, item)
            new_idents.setdefault(d.customer_id, []).extend(d.attach)
            if d.created:
                origins.setdefault(d.customer_id, d.event_id)
        for cid, info in resolved.infos.items():
            origins.setdefault(cid, info.origin_event_id)
        infos, shells = resolved.infos, resolved.shells
        # a customer created by this batch was written whole; it changes only if later
        # messages of the batch attached more identifiers to it
        changed = {
            cid
            for cid in first_event
            if (cid in shells and not shells[cid].issuperset(new_idents[cid]))
            or (cid not in shells and (new_idents[cid] or cid not in infos or infos[cid].pending))
        }
        missing = [cid for cid in first_event if cid not in origins]
        if missing:  # not expected: every decision names a known or a created customer
            origins.update(await customers.origins(store, missing))
        await customers.upsert_many(
            store,
            [
                customers.NewCustomer(
                    customer_id=cid,
                    origin_event_id=it.event.id,
                    display_name=it.message.display_name,
                    identifiers=sorted(set(new_idents[cid])),
                    name_tokens=name_tokens(it.message.display_name),
                    created_at=it.message.occurred_at,
                )
                for cid, it in first_event.items()
                if cid in changed
            ],
            now,
        )
        lap("customers")

        # conversations
        keys = {
            i.event.id: (by_event[i.event.id].customer_id, i.message.channel, i.message.thread)
            for i in items
        }
        segments = {cid: info.segment for cid, info in infos.items()}
        active, fresh = await self._conversations(items, keys, recorded, now, segments, set(shells))
        lap("conversations")

        # the timeline
        docs: list[Doc] = []
        touch: dict[str, Any] = {}
        for item in items:
            eid = item.event.id
            conv_id = recorded[eid] if eid in recorded else _id_or_none(active.get(keys[eid]))
            docs.append(_interaction_doc(item, by_event[eid].customer_id, conv_id, now))
            if conv_id is not None and conv_id not in fresh:
                at = item.message.occurred_at
                touch[conv_id] = max(touch.get(conv_id, at), at)
        await together(
            interactions.record_many(store, docs),
            conversations.touch_many(store, touch),
            at_once=small,
        )
        lap("timeline")

        # a concurrent merge may have made one of our customers a tombstone meanwhile, and a
        # concurrent unmerge may have taken back a sender we read as one of theirs. A message
        # of a replayed batch is where its first attempt stored it, which may be a customer
        # this attempt no longer reads its sender as (an unmerge ran between the two, however
        # long ago: the worker may have been down for days): its batch reads marks of any age
        placed = {eid: d["customer_id"] for eid, d in stored.items()}
        written = list(dict.fromkeys([*first_event, *placed.values()]))
        since = None if placed else now - merges.RECENT_SPLITS
        live, marks = await together(
            merges.settle(store, written), merges.split_marks(store, written, since), at_once=small
        )
        if placed:
            docs = [{**d, "customer_id": placed.get(d["_id"], d["customer_id"])} for d in docs]
        retaken = await merges.retake(store, docs, live, marks) if marks else {}
        lap("settle")

        # events for the public stream, deterministic ids so replays re-emit the same ones
        out = self._events(items, by_event, origins, active, keys, docs, live, retaken)
        return out + self._merge_events(resolved.merged)

    async def _conversations(
        self,
        items: list[_Item],
        keys: dict[str, conversations.Key],
        recorded: dict[str, str | None],
        now: Any,
        segments: dict[str, str | None],
        created: set[str],
    ) -> tuple[dict[conversations.Key, Doc], set[str]]:
        """The active conversation of every key: existing, reopened, or newly opened; and
        the ids of those this batch opened (their last_message_at is already the batch's).

        Only an inbound customer message (not an auto-reply, bounce or loop, and not our own
        outbound copy) opens one; on a thread resolved less than ``reopen_window`` ago it
        reopens that conversation instead.

        ``created``: the customers this batch created, whose conversations are not read:
        nothing could point at them before this batch linked their identifiers. A writer
        that opens one of theirs meanwhile is the race of one that opens it just after the
        read: the thread's unique key makes :func:`store.conversations.open_many` read it back.
        """
        store = self.store
        known = await conversations.by_customers(store, {k[0] for k in keys.values()} - created)
        active = conversations.active_among(known, keys.values())
        opening: dict[conversations.Key, _Item] = {}
        for item in items:
            key = keys[item.event.id]
            if item.event.id in recorded or key in active or key in opening:
                continue
            if item.message.direction != "in" or item.message.kind != "message":
                continue
            opening[key] = item
        if not opening:
            return active, set()
        recent = conversations.resolved_among(
            known, opening, now - timedelta(seconds=self.reopen_window)
        )
        last_at: dict[conversations.Key, datetime] = {}
        latest_in: dict[conversations.Key, c.Message] = {}  # what routing judges it on
        for item in items:  # a new conversation starts with the batch's last message on it
            if item.event.id not in recorded:
                key, m = keys[item.event.id], item.message
                last_at[key] = max(last_at.get(key, m.occurred_at), m.occurred_at)
                if m.direction == "in" and (
                    key not in latest_in or m.occurred_at >= latest_in[key].occurred_at
                ):
                    latest_in[key] = m
        proposals: list[Doc] = []
        for key, item in opening.items():
            conv = recent.get(key)
            if conv is not None:
                try:
                    reopened = await conversations.reopen(store, conv["_id"], item.event.id, now)
                except DuplicateKeyError:
                    reopened = None  # another writer opened this thread meanwhile
                if reopened is not None:
                    active[key] = reopened
                    continue
            doc = {
                "_id": c.derived_id(item.event.id, "conversation"),
                "customer_id": key[0],
                "channel": key[1],
                "thread": key[2],
                "account": item.message.account,
                "state": "open",
                "assignee": None,
                "offer_id": None,
                "priority": 0,
                "opened_at": now,
                "opened_by": item.event.id,
                "last_message_at": last_at[key],
            }
            if self.routing is not None:
                m = latest_in.get(key, item.message)
                message = {"subject": m.subject, "text": m.text}
                doc.update(classification(self.routing, doc, message, segments.get(key[0]), now))
            proposals.append(doc)
        opened = await conversations.open_many(store, proposals)
        active.update(opened)
        mine = {p["_id"] for p in proposals}
        return active, {d["_id"] for d in opened.values() if d["_id"] in mine}

    def _merge_events(self, merged: list[Doc]) -> list[Record]:
        out = []
        for entry in merged:
            ev = c.envelope(
                c.CUSTOMER_MERGED,
                c.CustomerMerged(
                    merge_id=entry["_id"],
                    survivor_id=entry["survivor_id"],
                    merged_id=entry["loser_id"],
                    reason=entry["reason"],
                ),
                id=c.derived_id(entry["_id"], c.CUSTOMER_MERGED),
                source=SOURCE,
                subject=entry["survivor_id"],
            )
            key = entry["survivor_id"].encode()
            out.append(Record(topics.CUSTOMER_EVENTS, key, ev.to_json()))
        return out

    def _events(
        self,
        items: list[_Item],
        by_event: dict[str, Decision],
        origins: dict[str, str],
        active: dict[conversations.Key, Doc],
        keys: dict[str, conversations.Key],
        docs: list[Doc],
        live: dict[str, str],
        retaken: dict[str, str],
    ) -> list[Record]:
        """``docs``: the interactions as stored; ``live``: customer → its live root;
        ``retaken``: interaction → the customer an unmerge took it back to
        (:func:`store.merges.retake`)."""
        out: list[Record] = []

        def emit(type_: str, data: Any, parent: str, customer_id: str, *extra: str) -> None:
            ev = c.envelope(
                type_,
                data,
                id=c.derived_id(parent, "\x1e".join((type_, *extra))),
                source=SOURCE,
                subject=customer_id,
            )
            out.append(Record(topics.CUSTOMER_EVENTS, customer_id.encode(), ev.to_json()))

        for item, doc in zip(items, docs, strict=True):
            eid = item.event.id
            res = by_event[eid]
            at: str = doc["customer_id"]  # where it is stored
            cid = retaken.get(eid) or live.get(at, at)
            if origins.get(res.customer_id) == eid:
                emit(
                    c.CUSTOMER_CREATED,
                    c.CustomerCreated(
                        customer_id=cid,
                        identifiers=list(item.identifiers),
                        display_name=item.message.display_name,
                        created_at=item.message.occurred_at,
                    ),
                    eid,
                    cid,
                )
            elif res.attach:
                for ident in res.attach:
                    emit(
                        c.CUSTOMER_IDENTIFIED,
                        c.CustomerIdentified(customer_id=cid, identifier=ident),
                        eid,
                        cid,
                        ident,
                    )
            emit(
                c.INTERACTION_RECORDED,
                c.InteractionRecorded(
                    interaction_id=eid,
                    customer_id=cid,
                    conversation_id=doc["conversation_id"],
                    message=item.message,
                ),
                eid,
                cid,
            )
            conv = active.get(keys[eid])
            if conv is not None and conv.get("reopened_by") == eid:
                emit(
                    c.CONVERSATION_REOPENED,
                    c.ConversationReopened(
                        conversation_id=conv["_id"],
                        customer_id=cid,
                        interaction_id=eid,
                        reopened_at=conv["reopened_at"],
                    ),
                    eid,
                    cid,
                )
            elif conv is not None and conv.get("opened_by") == eid:
                emit(
                    c.CONVERSATION_OPENED,
                    c.ConversationOpened(
                        conversation_id=conv["_id"],
                        customer_id=cid,
                        channel=item.message.channel,
                        account=item.message.account,
                        thread=item.message.thread,
                        opened_at=conv["opened_at"],
                        first_interaction_id=eid,
                        priority=conv.get("priority", 0),
                    ),
                    eid,
                    cid,
                )
        return out


class _Laps:
    """Times the steps of a batch's write into :data:`STAGE_SECONDS`, one after the other."""

    def __init__(self) -> None:
        self.at = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        STAGE_SECONDS.labels(stage).observe(now - self.at)
        self.at = now


def _id_or_none(doc: Doc | None) -> str | None:
    return None if doc is None else str(doc["_id"])


def _interaction_doc(item: _Item, customer_id: str, conv_id: str | None, now: Any) -> Doc:
    m = item.message
    return {
        "_id": item.event.id,
        "customer_id": customer_id,
        "conversation_id": conv_id,
        "channel": m.channel,
        "direction": m.direction,
        "account": m.account,
        "source_id": m.source_id,
        "thread": m.thread,
        "sender": list(item.identifiers),
        "display_name": m.display_name,
        "occurred_at": m.occurred_at,
        "received_at": now,
        "subject": m.subject,
        "text": m.text,
        "html": m.html,
        "attachments": [a.model_dump() for a in m.attachments],
        "call": m.call.model_dump() if m.call else None,
        "kind": m.kind,
        "quoted_text": m.quoted_text,
        "in_reply_to": m.in_reply_to,
        "references": list(m.references),
    }


__all__ = ["BatchResult", "Ingestor", "RawRecord"]
