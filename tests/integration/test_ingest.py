"""The ingest core against a real SecantusDB: identities, timeline, conversations, events."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from pipeline import contract as c
from pipeline import topics
from pipeline.agents.ingest import Ingestor, RawRecord
from pipeline.publish import Record

pytestmark = pytest.mark.integration


class Recorder:
    """Stands in for Kafka: keeps what was published, can fail on demand."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.fail_next = 0

    async def publish(self, records: Sequence[Record]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            from aiokafka.errors import KafkaTimeoutError

            raise KafkaTimeoutError("broker down (test)")
        self.records.extend(records)

    def events(self, topic: str = topics.CUSTOMER_EVENTS) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in self.records if r.topic == topic]


_offset = iter(range(10**9))


async def assert_orphans(store: Any, customer_ids: set[str]) -> None:
    """Customers that own no identifier may only be orphans of a lost identity race: written
    before their links, which another worker won. Nothing may point at them, and name search
    must not find them."""
    if not customer_ids:
        return
    ids = {"$in": sorted(customer_ids)}
    assert await store.interactions.count_documents({"customer_id": ids}) == 0
    assert await store.conversations.count_documents({"customer_id": ids}) == 0
    assert (
        await store.merges.count_documents({"$or": [{"survivor_id": ids}, {"loser_id": ids}]}) == 0
    )
    from store import customers

    for doc in await store.customers.find({"_id": ids}).to_list():
        for token in doc.get("name_tokens", ())[:1]:
            found = {d["_id"] for d in await customers.search_by_name(store, [token], limit=500)}
            assert doc["_id"] not in found


def raw(message: c.Message | None = None, value: bytes | None = None) -> RawRecord:
    if value is None:
        assert message is not None
        value = c.message_event(message, source="/test").to_json()
    return RawRecord(topics.INBOUND, 0, next(_offset), b"k", value)


def sms(
    source_id: str, phone: str, text: str = "سلام", direction: str = "in", **kw: Any
) -> c.Message:
    return c.Message.model_validate(
        {
            "channel": "sms",
            "direction": direction,
            "account": "+982100000000",
            "source_id": source_id,
            "sender": [{"kind": "phone", "value": phone}],
            "thread": kw.pop("thread", "t"),
            "occurred_at": kw.pop("occurred_at", "2026-03-01T10:00:00Z"),
            "text": text,
            **kw,
        }
    )


async def test_every_phone_form_of_one_person_is_one_customer_with_one_conversation(store) -> None:
    pub = Recorder()
    ing = Ingestor(store, pub)
    forms = ["۰۹۱۲ ۳۴۵ ۶۷۸۹", "+98 912 345 6789", "00989123456789", "٠٩١٢٣٤٥٦٧٨٩"]
    await ing.process([raw(sms(f"m{i}", f)) for i, f in enumerate(forms)])
    assert await store.customers.count_documents({}) == 1
    assert await store.interactions.count_documents({}) == 4
    assert await store.conversations.count_documents({}) == 1
    ident = await store.identities.find_one({"_id": "phone:+989123456789"})
    cust = await store.customers.find_one({})
    assert ident["customer_id"] == cust["_id"]
    types = [e["type"] for e in pub.events()]
    assert types.count(c.CUSTOMER_CREATED) == 1
    assert types.count(c.INTERACTION_RECORDED) == 4
    assert types.count(c.CONVERSATION_OPENED) == 1
    # events are keyed by customer and parse against the contract
    assert {r.key for r in pub.records} == {cust["_id"].encode()}
    for r in pub.records:
        c.parse_event(r.value)


async def test_replaying_a_batch_changes_nothing_and_re_emits_identical_events(store) -> None:
    pub = Recorder()
    ing = Ingestor(store, pub)
    batch = [
        raw(sms("a", "09121111111")),
        raw(sms("b", "09122222222")),
        raw(sms("c", "09121111111")),
    ]
    await ing.process(batch)
    first = [(e["id"], e["type"]) for e in pub.events()]
    snapshot = {
        name: sorted(
            [d async for d in store.db[name].find({}, {"_id": 1, "customer_id": 1})],
            key=lambda d: d["_id"],
        )
        for name in ("identities", "customers", "interactions", "conversations")
    }
    pub.records.clear()
    await ing.process(batch)  # the worker died before committing: the batch comes again
    assert [(e["id"], e["type"]) for e in pub.events()] == first
    for name, docs in snapshot.items():
        again = sorted(
            [d async for d in store.db[name].find({}, {"_id": 1, "customer_id": 1})],
            key=lambda d: d["_id"],
        )
        assert again == docs, name


async def test_bad_records_go_to_the_dead_letter_topic_and_the_batch_goes_on(store) -> None:
    pub = Recorder()
    ing = Ingestor(store, pub)
    garbage = b"\x00\xffnot json"
    wrong = json.loads(c.message_event(sms("x", "09121234567"), source="/t").to_json())
    wrong["data"]["channel"] = "fax"
    bad_phone = sms("y", "09121234567").model_copy(
        update={"sender": [c.Identifier(kind="phone", value="12")]}
    )
    batch = [
        raw(sms("ok1", "09121234567")),
        raw(value=garbage),
        raw(value=json.dumps(wrong).encode()),
        raw(bad_phone),
        raw(sms("ok2", "09121234567")),
    ]
    result = await ing.process(batch)
    assert (result.stored, result.deadlettered) == (2, 3)
    assert await store.interactions.count_documents({}) == 2
    dead = pub.events(topics.DEADLETTER)
    assert [d["data"]["stage"] for d in dead] == ["validate", "validate", "identify"]
    assert base64.b64decode(dead[0]["data"]["value_b64"]) == garbage  # original bytes kept
    assert "data.channel" in dead[1]["data"]["error"]
    assert dead[2]["data"]["offset"] == batch[3].offset
    for d in dead:
        assert c.parse_event(json.dumps(d)).type == c.MESSAGE_DEADLETTERED


async def test_outbound_messages_join_the_timeline_without_opening_a_conversation(store) -> None:
    pub = Recorder()
    ing = Ingestor(store, pub)
    await ing.process([raw(sms("o1", "09121234567", direction="out"))])
    assert await store.interactions.count_documents({}) == 1
    assert await store.conversations.count_documents({}) == 0
    await ing.process(
        [raw(sms("i1", "09121234567")), raw(sms("o2", "09121234567", direction="out"))]
    )
    conv = await store.conversations.find_one({})
    ids = [c.message_event_id("sms", "+982100000000", s) for s in ("i1", "o2")]
    docs = [d async for d in store.interactions.find({"_id": {"$in": ids}})]
    assert {d["conversation_id"] for d in docs} == {conv["_id"]}


async def test_a_transient_broker_failure_is_retried_not_lost(store) -> None:
    pub = Recorder()
    pub.fail_next = 2
    ing = Ingestor(store, pub)
    await ing.process([raw(sms("r1", "09121234567"))])
    assert [e["type"] for e in pub.events()].count(c.INTERACTION_RECORDED) == 1


async def test_two_threads_of_one_customer_are_two_conversations(store) -> None:
    ing = Ingestor(store, Recorder())
    await ing.process(
        [raw(sms("t1", "09121234567", thread="a")), raw(sms("t2", "09121234567", thread="b"))]
    )
    assert await store.conversations.count_documents({"active": True}) == 2
    assert await store.customers.count_documents({}) == 1


async def test_racing_workers_on_overlapping_identifiers_converge(store) -> None:
    """Several ingestors (as several workers would) take overlapping batches concurrently:
    afterwards every identifier has one owner, each message one interaction, and every
    message of a phone is on its owner's timeline."""
    rng = random.Random(7)
    phones = [f"0912{n:07d}" for n in range(40)]
    messages = [sms(f"race-{i}", rng.choice(phones)) for i in range(400)]
    batches = [[raw(m) for m in rng.sample(messages, 60)] for _ in range(12)]
    batches.append([raw(m) for m in messages])  # and one that has them all
    ingestors = [Ingestor(store, Recorder()) for _ in range(4)]
    await asyncio.gather(*(ingestors[i % 4].process(b) for i, b in enumerate(batches)))
    assert await store.interactions.count_documents({}) == 400
    owners = {d["_id"]: d["customer_id"] async for d in store.identities.find({})}
    assert len(owners) == len({m.sender[0].value for m in messages})
    async for doc in store.interactions.find({}):
        assert owners[doc["sender"][0]] == doc["customer_id"]
    # customers referenced by identities all exist; one without an identity is an orphan
    cust_ids = {d["_id"] async for d in store.customers.find({"pending": {"$ne": True}})}
    assert set(owners.values()) <= cust_ids
    await assert_orphans(store, cust_ids - set(owners.values()))
    assert await store.conversations.count_documents({"active": True}) == len(set(owners.values()))


async def test_a_new_message_reopens_a_recently_resolved_conversation(store) -> None:
    pub = Recorder()
    ing = Ingestor(store, pub, reopen_window=3600)
    await ing.process([raw(sms("r1", "09121234567"))])
    conv = await store.conversations.find_one({})
    await store.conversations.update_one(
        {"_id": conv["_id"]},
        {"$set": {"state": "resolved", "active": False, "resolved_at": c.utcnow()}},
    )
    pub.records.clear()
    await ing.process([raw(sms("r2", "09121234567"))])
    assert await store.conversations.count_documents({}) == 1
    again = await store.conversations.find_one({})
    assert again["active"] and again["state"] == "open" and again["reopened_by"]
    types = [e["type"] for e in pub.events()]
    assert c.CONVERSATION_REOPENED in types and c.CONVERSATION_OPENED not in types
    # resolved long ago: a new conversation instead
    await store.conversations.update_one(
        {"_id": conv["_id"]},
        {
            "$set": {
                "state": "resolved",
                "active": False,
                "resolved_at": c.utcnow() - timedelta(hours=2),
            }
        },
    )
    await ing.process([raw(sms("r3", "09121234567"))])
    assert await store.conversations.count_documents({}) == 2


async def test_auto_replies_and_bounces_never_open_a_conversation(store) -> None:
    ing = Ingestor(store, Recorder())
    auto = sms("auto1", "09121234567").model_copy(update={"kind": "auto_reply"})
    bounce = sms("b1", "09121234567").model_copy(update={"kind": "bounce"})
    await ing.process([raw(auto), raw(bounce)])
    assert await store.interactions.count_documents({}) == 2
    assert await store.conversations.count_documents({}) == 0


async def test_name_search_leaves_out_a_customer_that_lost_its_identity_race(store) -> None:
    """A worker writes a customer before linking its identifier; if another worker linked it
    first, the written customer owns nothing and search must not offer it to an agent."""
    from store import customers

    ing = Ingestor(store, Recorder())
    await ing.process([raw(sms("search-1", "09121110000", display_name="Shirin Karimi"))])
    owner = (await store.identities.find_one({"_id": "phone:+989121110000"}))["customer_id"]
    now = c.utcnow()
    loser = customers.NewCustomer(
        customer_id="lost-race",
        origin_event_id="elsewhere",
        display_name="Shirin Karimi",
        identifiers=["phone:+989121110000"],
        name_tokens=["shirin", "karimi"],
        created_at=now,
    )
    assert await customers.create_shells(store, [loser], now) == set()
    assert await customers.create_shells(store, [loser], now) == {"lost-race"}  # a replay
    found = await customers.search_by_name(store, ["shirin", "kar"])
    assert [d["_id"] for d in found] == [owner]
    assert [d["_id"] for d in await customers.search_by_name(store, ["shi"])] == [owner]
    assert await customers.search_by_name(store, ["shirin", "rez"]) == []


async def test_conversations_list_latest_message_first(store) -> None:
    """A later message on an older conversation moves it to the top, with its time."""
    from store import conversations

    ing = Ingestor(store, Recorder())
    await ing.process([raw(sms("order-1", "09121110001", occurred_at="2026-03-01T10:00:00Z"))])
    await ing.process([raw(sms("order-2", "09121110002", occurred_at="2026-03-01T10:05:00Z"))])
    listed = await conversations.listing(store, {"active": True})
    assert [d["last_message_at"].isoformat() for d in listed] == [
        "2026-03-01T10:05:00+00:00",
        "2026-03-01T10:00:00+00:00",
    ]
    await ing.process([raw(sms("order-3", "09121110001", occurred_at="2026-03-01T10:09:00Z"))])
    await ing.process([raw(sms("order-3", "09121110001", occurred_at="2026-03-01T10:09:00Z"))])
    listed = await conversations.listing(store, {"active": True})
    assert [d["last_message_at"].isoformat() for d in listed] == [
        "2026-03-01T10:09:00+00:00",
        "2026-03-01T10:05:00+00:00",
    ]
    assert len(await conversations.listing(store, {"active": True}, limit=1)) == 1
    one = await conversations.get(store, listed[0]["_id"])
    assert (await conversations.with_activity(store, [one]))[0]["last_message_at"] == (
        listed[0]["last_message_at"]
    )


async def test_a_conversation_is_classified_for_routing_in_the_write_that_opens_it(store) -> None:
    """With the router's configuration the worker stores language, urgency, priority and SLA
    due times when it opens a conversation, judged on the batch's latest customer message."""
    from router.service import RouterConfig

    ing = Ingestor(store, Recorder(), routing=RouterConfig(sla_first_response=(3600.0, 900.0)))
    first = sms("cls-1", "09121110003", "سلام", occurred_at="2026-03-01T10:00:00Z")
    urgent = sms("cls-2", "09121110003", "فوری: سفارشم نرسید", occurred_at="2026-03-01T10:00:05Z")
    await ing.process([raw(first), raw(urgent)])
    conv = await store.conversations.find_one({})
    assert conv["classified_at"] == conv["opened_at"]
    assert conv["language"] == "fa" and conv["urgency"] == ["فوری"]
    assert conv["priority"] == conv["base_priority"] >= 1
    assert conv["first_response_due"] - conv["opened_at"] == timedelta(seconds=900)
    # without the configuration (as before), the router is left to classify it
    await Ingestor(store, Recorder()).process([raw(sms("cls-3", "09121110004", "hello"))])
    other = await store.conversations.find_one({"_id": {"$ne": conv["_id"]}})
    assert other.get("classified_at") is None


async def test_a_written_batch_emits_nothing_until_published_and_a_retry_counts_once(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker writes the next batch while one batch's events are sent: writing must not
    publish, publishing must emit each event once even after transient failures, and a store
    step retried after a transient failure must not count or emit anything twice."""
    from pymongo.errors import AutoReconnect

    from store import interactions

    pub = Recorder()
    ing = Ingestor(store, pub)
    real_record_many = interactions.record_many
    failures = [AutoReconnect("store blip (test)")]

    async def flaky_record_many(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real_record_many(*args, **kwargs)

    monkeypatch.setattr(interactions, "record_many", flaky_record_many)
    first = await ing.write([raw(sms("w1", "09123330001")), raw(value=b"not json")])
    second = await ing.write([raw(sms("w2", "09123330001")), raw(sms("w3", "09123330002"))])
    assert pub.records == []  # nothing leaves before publish
    assert await store.interactions.count_documents({}) == 3
    assert (first.stored, first.deadlettered, second.stored) == (1, 1, 2)

    pub.fail_next = 1  # the broker fails once: the same events go out on the retry
    await ing.publish(first)
    await ing.publish(second)
    recorded = [e for e in pub.events() if e["type"] == c.INTERACTION_RECORDED]
    assert [e["data"]["message"]["source_id"] for e in recorded] == ["w1", "w2", "w3"]
    assert len({e["id"] for e in pub.events()}) == len(pub.events())  # none twice
    assert len(pub.events(topics.DEADLETTER)) == 1
    assert (first.emitted, second.emitted) == (3, 4)  # created+recorded+opened; +created


async def test_a_record_the_store_rejects_is_found_by_halving_and_the_rest_are_stored(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write error on one record (not transient) must not cost the batch: the others are
    stored and emitted once, the bad one is dead-lettered with the store's reason, and finding
    it takes halvings of the batch, not one apply per record."""
    from pymongo.errors import OperationFailure

    from store import interactions

    pub = Recorder()
    ing = Ingestor(store, pub)
    real_record_many = interactions.record_many

    async def rejecting(store_: Any, docs: list[dict[str, Any]]) -> Any:
        if any(d["source_id"] == "poison" for d in docs):
            raise OperationFailure("document rejected (test)", code=2)
        return await real_record_many(store_, docs)

    monkeypatch.setattr(interactions, "record_many", rejecting)
    applies: list[int] = []
    real_apply = ing._apply

    async def counting(items: list[Any]) -> Any:
        applies.append(len(items))
        return await real_apply(items)

    monkeypatch.setattr(ing, "_apply", counting)
    ids = [f"s{i}" for i in range(16)]
    ids[11] = "poison"
    batch = [raw(sms(s, f"0912444{i:04d}")) for i, s in enumerate(ids)]
    result = await ing.process(batch)
    assert (result.stored, result.deadlettered) == (15, 1)
    assert len(applies) == 9, applies  # 16, 8+8, 4+4, 2+2, 1+1; one at a time took 17
    assert await store.interactions.count_documents({}) == 15
    dead = pub.events(topics.DEADLETTER)
    assert [(d["data"]["stage"], d["data"]["offset"]) for d in dead] == [
        ("store", batch[11].offset)
    ]
    assert "document rejected (test)" in dead[0]["data"]["error"]
    recorded = [e for e in pub.events() if e["type"] == c.INTERACTION_RECORDED]
    assert sorted(e["data"]["message"]["source_id"] for e in recorded) == sorted(
        s for s in ids if s != "poison"
    )
    assert len({e["id"] for e in pub.events()}) == len(pub.events())  # none twice


async def test_the_conversations_of_customers_a_batch_created_are_not_read(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A customer the batch created has nothing to read back; one created before is read,
    so its next message joins its open conversation; and a conversation another writer opened
    for a new customer meanwhile is joined, not doubled."""
    from store import conversations

    pub = Recorder()
    ing = Ingestor(store, pub)
    asked: list[set[str]] = []
    real_by_customers = conversations.by_customers

    async def by_customers(store_: Any, customer_ids: Any) -> Any:
        asked.append(set(customer_ids := list(customer_ids)))
        return await real_by_customers(store_, customer_ids)

    monkeypatch.setattr(conversations, "by_customers", by_customers)
    await ing.process([raw(sms("a1", "09125550001")), raw(sms("a2", "09125550001"))])
    assert asked == [set()]
    a = (await store.identities.find_one({"_id": "phone:+989125550001"}))["customer_id"]

    real_open_many = conversations.open_many

    async def open_many(store_: Any, proposals: Any) -> Any:
        for p in proposals:  # another worker opens the new customer's thread first
            if p["customer_id"] != a:
                await store_.conversations.insert_one(
                    {**p, "_id": "theirs", "opened_by": "elsewhere", "active": True}
                )
        return await real_open_many(store_, proposals)

    monkeypatch.setattr(conversations, "open_many", open_many)
    await ing.process([raw(sms("a3", "09125550001")), raw(sms("b1", "09125550002"))])
    assert asked[1] == {a}
    b = (await store.identities.find_one({"_id": "phone:+989125550002"}))["customer_id"]
    convs = {d["customer_id"]: d["_id"] async for d in store.conversations.find({})}
    assert set(convs) == {a, b} and convs[b] == "theirs"
    by_source = {d["source_id"]: d["conversation_id"] async for d in store.interactions.find({})}
    assert by_source == {"a1": convs[a], "a2": convs[a], "a3": convs[a], "b1": "theirs"}


async def test_a_batch_times_each_step_of_its_write(store) -> None:
    """omnihub_ingest_stage_seconds carries the steps of a batch's write, so an operator sees
    which one a slow worker waits on; together they take no more than the write itself."""
    from prometheus_client import REGISTRY

    steps = ("resolve", "customers", "conversations", "timeline", "settle", "write")

    def sample(kind: str) -> dict[str, float]:
        name = f"omnihub_ingest_stage_seconds_{kind}"
        return {s: REGISTRY.get_sample_value(name, {"stage": s}) or 0.0 for s in steps}

    sums, counts = sample("sum"), sample("count")
    await Ingestor(store, Recorder()).process([raw(sms("st1", "09125559999"))])
    took = {s: t - sums[s] for s, t in sample("sum").items()}
    assert {s: n - counts[s] for s, n in sample("count").items()} == dict.fromkeys(steps, 1)
    assert all(took[s] > 0 for s in steps)
    assert sum(took[s] for s in steps[:-1]) <= took["write"]
