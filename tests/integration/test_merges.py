"""Merges, unmerges, suggestions and races against a real SecantusDB."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from pipeline import contract as c
from pipeline.agents.ingest import Ingestor
from store import merges
from store.mongo import Store, ensure_indexes
from tests.integration.test_ingest import Recorder, assert_orphans, raw
from tests.timing import fastest
from unify.resolver import Policy

pytestmark = pytest.mark.integration


def msg(
    source_id: str,
    *senders: tuple[str, str, str],
    at: str = "2026-03-01T10:00:00Z",
    channel: str = "api",
    thread: str = "t",
) -> c.Message:
    return c.Message.model_validate(
        {
            "channel": channel,
            "account": "acct",
            "source_id": source_id,
            "thread": thread,
            "sender": [{"kind": k, "value": v, "assurance": a} for k, v, a in senders],
            "occurred_at": at,
            "text": source_id,
        }
    )


def ch(kind: str, value: str) -> tuple[str, str, str]:
    return (kind, value, "channel")


def claimed(kind: str, value: str) -> tuple[str, str, str]:
    return (kind, value, "claimed")


async def owner(store, ident: str) -> str:
    doc = await store.identities.find_one({"_id": ident})
    return doc["customer_id"]


async def three_customers(store, ing: Ingestor) -> list[str]:
    """Three customers, oldest first, one Telegram message each (m111, m222, m333)."""
    for n, day in (("111", 1), ("222", 2), ("333", 3)):
        at = f"2026-01-0{day}T00:00:00Z"
        await ing.process([raw(msg(f"m{n}", ch("telegram", n), at=at))])
    return [await owner(store, f"telegram:{n}") for n in ("111", "222", "333")]


async def sara_merged(store, ing: Ingestor) -> tuple[str, str]:
    """The phone's customer (p1) and sara's email's (e1), merged by a message carrying both
    (link): (survivor, merged)."""
    await ing.process([raw(msg("p1", ch("phone", "09121234567"), at="2026-01-01T00:00:00Z"))])
    await ing.process([raw(msg("e1", ch("email", "sara@example.com"), at="2026-02-01T00:00:00Z"))])
    phone_cust = await owner(store, "phone:+989121234567")
    email_cust = await owner(store, "email:sara@example.com")
    await ing.process(
        [raw(msg("link", ch("phone", "09121234567"), ch("email", "sara@example.com")))]
    )
    return phone_cust, email_cust


async def test_a_message_linking_two_customers_merges_them_into_the_oldest(store) -> None:
    pub = Recorder()
    ing = Ingestor(store, pub)
    await ing.process([raw(msg("sms-1", ch("phone", "09121234567"), at="2026-01-01T00:00:00Z"))])
    await ing.process(
        [raw(msg("mail-1", ch("email", "Ali@Example.com"), at="2026-02-01T00:00:00Z"))]
    )
    old, young = (
        await owner(store, "phone:+989121234567"),
        await owner(store, "email:ali@example.com"),
    )
    assert old != young
    await ing.process(
        [raw(msg("both", ch("phone", "+98 912 123 4567"), ch("email", "ali@example.com")))]
    )
    assert await owner(store, "email:ali@example.com") == old
    loser = await store.customers.find_one({"_id": young})
    assert loser["merged_into"] == old
    assert await store.interactions.count_documents({"customer_id": old}) == 3
    survivor = await store.customers.find_one({"_id": old})
    assert set(survivor["identifiers"]) == {"phone:+989121234567", "email:ali@example.com"}
    entry = await store.merges.find_one({})
    assert (entry["survivor_id"], entry["loser_id"], entry["state"]) == (old, young, "done")
    merged = [json.loads(r.value) for r in pub.records if b"customer.merged" in r.value]
    assert [m["data"]["merged_id"] for m in merged] == [young]
    # the same batch again (a replay) re-emits the identical merge event and changes nothing
    pub.records.clear()
    await ing.process(
        [raw(msg("both", ch("phone", "+98 912 123 4567"), ch("email", "ali@example.com")))]
    )
    again = [json.loads(r.value) for r in pub.records if b"customer.merged" in r.value]
    assert [m["id"] for m in again] == [m["id"] for m in merged]
    assert await store.merges.count_documents({}) == 1


async def test_unmerge_restores_both_and_later_messages_follow_their_identifier(store) -> None:
    ing = Ingestor(store, Recorder())
    phone_cust, email_cust = await sara_merged(store, ing)
    # after the merge, the email owner writes again: it lands on the survivor for now
    await ing.process([raw(msg("e2", ch("email", "sara@example.com")))])
    assert await store.interactions.count_documents({"customer_id": phone_cust}) == 4
    entry = await store.merges.find_one({})
    done = await merges.unmerge(store, entry["_id"], c.utcnow(), by="supervisor-1")
    assert done["state"] == "undone"
    assert await owner(store, "email:sara@example.com") == email_cust
    assert (await store.customers.find_one({"_id": email_cust}))["merged_into"] is None
    by_customer = defaultdict(set)
    async for d in store.interactions.find({}):
        by_customer[d["customer_id"]].add(d["source_id"])
    # e2 arrived after the merge and goes back with its identifier; "link" carried both
    # identifiers and stays with... whichever owns one of its senders: it moves with the email
    assert by_customer[phone_cust] == {"p1"}
    assert by_customer[email_cust] == {"e1", "e2", "link"}
    # an agent separated them: seeing both identifiers again suggests, never re-merges
    await ing.process(
        [raw(msg("link-2", ch("phone", "09121234567"), ch("email", "sara@example.com")))]
    )
    assert await store.merges.count_documents({"state": "done"}) == 0
    sug = await store.suggestions.find_one({"reason": "separated"})
    assert sorted(sug["customers"]) == sorted([phone_cust, email_cust])


async def test_a_claimed_email_suggests_a_merge_and_never_links(store) -> None:
    ing = Ingestor(store, Recorder())
    await ing.process(
        [raw(msg("mail", ch("email", "reza@example.com"), at="2026-01-01T00:00:00Z"))]
    )
    await ing.process(
        [raw(msg("chat", ch("webchat", "visitor-9"), claimed("email", "Reza@Example.com")))]
    )
    visitor = await owner(store, "webchat:visitor-9")
    mail = await owner(store, "email:reza@example.com")
    assert visitor != mail
    sug = await store.suggestions.find_one({})
    assert sug["reason"] == "claimed" and sug["state"] == "open"
    assert sorted(sug["customers"]) == sorted([visitor, mail])
    # and a claim made before the real owner ever wrote becomes a suggestion when they do
    await ing.process(
        [raw(msg("chat2", ch("webchat", "visitor-10"), claimed("phone", "09350000000")))]
    )
    assert await store.identities.find_one({"_id": "phone:+989350000000"}) is None
    await ing.process([raw(msg("sms", ch("phone", "09350000000")))])
    assert await store.suggestions.count_documents({"identifier": "phone:+989350000000"}) == 1


async def test_blocklisted_support_number_never_merges_customers(store) -> None:
    policy = Policy(blocklist=frozenset({"phone:+982100000000"}))
    ing = Ingestor(store, Recorder(), policy=policy)
    await ing.process([raw(msg("a", ch("phone", "02100000000"), ch("email", "a@example.com")))])
    await ing.process([raw(msg("b", ch("phone", "02100000000"), ch("email", "b@example.com")))])
    assert await owner(store, "email:a@example.com") != await owner(store, "email:b@example.com")
    assert await store.identities.find_one({"_id": "phone:+982100000000"}) is None


async def test_a_merge_interrupted_by_a_crash_is_finished_on_resume(store) -> None:
    ing = Ingestor(store, Recorder())
    await ing.process([raw(msg("x1", ch("telegram", "111"), at="2026-01-01T00:00:00Z"))])
    await ing.process([raw(msg("x2", ch("telegram", "222"), at="2026-01-02T00:00:00Z"))])
    a, b = await owner(store, "telegram:111"), await owner(store, "telegram:222")
    # a worker died after writing the log entry and the tombstone, before moving anything
    await store.merges.insert_one(
        {
            "_id": "m-crash",
            "survivor_id": a,
            "loser_id": b,
            "reason": "test",
            "identifier": None,
            "trigger": None,
            "state": "pending",
            "created_at": c.utcnow(),
            "snapshot": {"identities": ["telegram:222"], "conversations": []},
        }
    )
    await store.customers.update_one({"_id": b}, {"$set": {"merged_into": a}})
    assert await owner(store, "telegram:222") == b
    assert await merges.resume_pending(store, c.utcnow()) == 1
    assert await owner(store, "telegram:222") == a
    assert await store.interactions.count_documents({"customer_id": a}) == 2
    assert (await store.merges.find_one({"_id": "m-crash"}))["state"] == "done"


async def test_a_merge_whose_survivor_is_merged_meanwhile_leaves_nothing_on_it(store) -> None:
    """Two workers: one merges x into b; before it moves x's things, the other merges b into
    the older a, re-point and all. The first one's re-point then lands on b, a tombstone."""
    ing = Ingestor(store, Recorder())
    a, b, x = await three_customers(store, ing)
    # the first worker logged its merge of x into b and was held up there
    await store.merges.insert_one(
        {
            "_id": "m-slow",
            "survivor_id": b,
            "loser_id": x,
            "reason": "test",
            "identifier": None,
            "trigger": None,
            "state": "pending",
            "created_at": c.utcnow(),
            "snapshot": {"identities": ["telegram:333"], "conversations": []},
        }
    )
    done = await merges.merge(
        store, "m-fast", a, b, reason="test", identifier=None, trigger=None, now=c.utcnow()
    )
    assert done is not None and done["state"] == "done"
    assert await merges.resume_pending(store, c.utcnow()) == 1  # the first worker goes on
    assert {await owner(store, f"telegram:{n}") for n in ("111", "222", "333")} == {a}
    on = {d["source_id"]: d["customer_id"] async for d in store.interactions.find({})}
    assert on == {"m111": a, "m222": a, "m333": a}
    assert await store.conversations.count_documents({"customer_id": {"$ne": a}}) == 0
    survivor = await store.customers.find_one({"_id": a})
    assert {"telegram:222", "telegram:333"} <= set(survivor["identifiers"])
    assert (await store.merges.find_one({"_id": "m-slow"}))["state"] == "done"
    assert await merges.roots(store, [x, b]) == {x: a, b: a}


async def test_settling_follows_a_root_merged_while_it_moved_things_onto_it(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ing = Ingestor(store, Recorder())
    a, b, x = await three_customers(store, ing)
    # x is a tombstone of b whose things a writer left on x (it wrote them a moment ago)
    await store.customers.update_one({"_id": x}, {"$set": {"merged_into": b}})
    await store.merges.insert_one({"_id": "m-x", "survivor_id": b, "loser_id": x, "state": "done"})
    repoint = merges.repoint

    async def merged_meanwhile(store_: Store, old: str, new: str, merge_id: str | None = None):
        if new == b:  # another worker merges b into a, all of it, just before our move
            await merges.merge(
                store, "m-b", a, b, reason="test", identifier=None, trigger=None, now=c.utcnow()
            )
        await repoint(store_, old, new, merge_id)

    monkeypatch.setattr(merges, "repoint", merged_meanwhile)
    assert await merges.settle(store, [x]) == {x: a}
    on = {d["source_id"]: d["customer_id"] async for d in store.interactions.find({})}
    assert on == {"m111": a, "m222": a, "m333": a}
    assert await owner(store, "telegram:333") == a


async def test_an_unmerge_follows_its_survivor_merged_again_while_it_runs(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent unmerges l from s; just after the unmerge checked that s was not merged
    again, a worker merges s into the older a, re-point and all. What belongs to l is on a by
    then, and must come back to l all the same."""
    ing = Ingestor(store, Recorder())
    a, s, l_ = await three_customers(store, ing)
    now = c.utcnow()
    entry = await merges.merge(
        store, "m-l", s, l_, reason="t", identifier=None, trigger=None, now=now
    )
    assert entry is not None
    # after the merge l's identifier writes again: it lands on s for now
    await ing.process([raw(msg("m333-later", ch("telegram", "333")))])
    undo = merges._undo

    async def merged_meanwhile(store_: Store, entry_: Any, now_: Any) -> None:
        await merges.merge(
            store, "m-s", a, s, reason="t", identifier=None, trigger=None, now=c.utcnow()
        )
        await undo(store_, entry_, now_)

    monkeypatch.setattr(merges, "_undo", merged_meanwhile)
    done = await merges.unmerge(store, "m-l", c.utcnow(), by="supervisor-1")
    assert done["state"] == "undone"
    assert await owner(store, "telegram:333") == l_
    assert {await owner(store, f"telegram:{n}") for n in ("111", "222")} == {a}
    on = {d["source_id"]: d["customer_id"] async for d in store.interactions.find({})}
    assert on == {"m111": a, "m222": a, "m333": l_, "m333-later": l_}
    convs = {d["customer_id"] async for d in store.conversations.find({"active": True})}
    assert convs == {a, l_}
    docs = {d["_id"]: d async for d in store.customers.find({"_id": {"$in": [a, s, l_]}})}
    assert docs[l_]["merged_into"] is None and docs[s]["merged_into"] == a
    assert "telegram:333" not in docs[a]["identifiers"]
    assert "telegram:333" in docs[l_]["identifiers"]
    assert a in docs[l_]["separated_from"] and l_ in docs[a]["separated_from"]
    assert await merges.stranded(store) == []


async def test_a_message_stored_while_an_unmerge_runs_goes_back_with_its_identifier(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker reads sara's email as the merged customer's, then an agent's unmerge takes
    everything of sara's back, then the worker stores her message: it must not stay behind on
    the customer she was split from, nor the conversation it opened."""
    from store import interactions

    pub = Recorder()
    ing = Ingestor(store, pub)
    phone_cust, email_cust = await sara_merged(store, ing)
    entry = await store.merges.find_one({})
    record_many = interactions.record_many

    async def unmerged_meanwhile(store_: Store, docs: Any) -> None:
        if any(d["source_id"] == "e-late" for d in docs):
            await merges.unmerge(store, entry["_id"], c.utcnow(), by="supervisor-1")
        await record_many(store_, docs)

    monkeypatch.setattr(interactions, "record_many", unmerged_meanwhile)
    pub.records.clear()
    await ing.process([raw(msg("e-late", ch("email", "sara@example.com"), thread="t2"))])
    on = {d["source_id"]: d["customer_id"] async for d in store.interactions.find({})}
    assert on == {"p1": phone_cust, "e1": email_cust, "link": email_cust, "e-late": email_cust}
    conv = await store.conversations.find_one({"thread": "t2"})
    assert conv["customer_id"] == email_cust and conv["active"]
    sent = [json.loads(r.value) for r in pub.records]
    recorded = [e for e in sent if e["type"] == c.INTERACTION_RECORDED]
    opened = [e for e in sent if e["type"] == c.CONVERSATION_OPENED]
    assert [e["data"]["customer_id"] for e in recorded + opened] == [email_cust, email_cust]
    # the mark stays an hour; a message of the customer it was split from stays with it
    monkeypatch.setattr(interactions, "record_many", record_many)
    await ing.process([raw(msg("p-late", ch("phone", "09121234567"), thread="t2"))])
    late = await store.interactions.find_one({"source_id": "p-late"})
    assert late["customer_id"] == phone_cust
    assert await store.splits.count_documents({"customer_id": phone_cust}) == 1


async def test_what_merged_customers_still_hold_is_found_and_moved_to_their_survivor(
    store, mongo_url: str, tmp_path
) -> None:
    """Data the race above left on a tombstone before the fix: `omnihub doctor` warns about
    it, `omnihub doctor --repair` moves it."""
    from hub.doctor import run_doctor
    from hub.settings import Settings
    from tests.peers import free_port

    ing = Ingestor(store, Recorder())
    await ing.process([raw(msg("m1", ch("telegram", "111"), at="2026-01-01T00:00:00Z"))])
    await ing.process([raw(msg("m2", ch("telegram", "222"), at="2026-01-02T00:00:00Z"))])
    await ing.process([raw(msg("m3", ch("telegram", "333"), at="2026-01-03T00:00:00Z"))])
    a, b, x = [await owner(store, f"telegram:{n}") for n in ("111", "222", "333")]
    now = c.utcnow()
    await merges.merge(store, "m-b", a, b, reason="t", identifier=None, trigger=None, now=now)
    await merges.merge(store, "m-x", a, x, reason="t", identifier=None, trigger=None, now=now)
    assert await merges.stranded(store) == []
    # as the race left them: b's message and x's identifier on the tombstones
    await store.interactions.update_one({"source_id": "m2"}, {"$set": {"customer_id": b}})
    await store.identities.update_one({"_id": "telegram:333"}, {"$set": {"customer_id": x}})
    assert await merges.stranded(store) == sorted([b, x])

    settings = Settings(
        data_dir=tmp_path,
        mongo_uri=mongo_url,
        mongo_db=store.db.name,
        kafka_port=free_port(),
        worker_port=free_port(),
        api_port=free_port(),
    )

    async def merges_line(repair: bool) -> str:
        lines: list[str] = []
        await run_doctor(settings, out=lines.append, repair=repair)
        found = [ln for ln in "\n".join(lines).splitlines() if "merges:" in ln]
        assert len(found) == 1, lines
        return found[0]

    assert (await merges_line(False)).startswith(
        "  warn  merges: 2 merged customers still hold messages, identifiers or conversations"
    )
    assert await merges.stranded(store) == sorted([b, x])  # a check changes nothing
    assert (await merges_line(True)).startswith("  ok    merges: moved what 2 merged customers")
    assert await merges.stranded(store) == []
    on = {d["source_id"]: d["customer_id"] async for d in store.interactions.find({})}
    assert on == {"m1": a, "m2": a, "m3": a}
    assert await owner(store, "telegram:333") == a
    assert (await merges_line(False)).startswith("  ok    merges: every merged customer's")


class Finds(monitoring.CommandListener):
    """The filter of each find a client sends, by collection."""

    def __init__(self) -> None:
        self.filters: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.filters.append((str(event.command["find"]), dict(event.command["filter"])))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def customers_asked(self) -> set[str]:
        asked: set[str] = set()
        for coll, query in self.filters:
            if coll == "customers":
                ids = query["_id"]
                asked |= set(ids["$in"]) if isinstance(ids, dict) else {ids}
        return asked


async def test_roots_follow_merge_chains_and_read_only_customers_the_log_names(
    store, mongo_url
) -> None:
    ing = Ingestor(store, Recorder())
    for n, (tg, day) in enumerate((("1", "01"), ("2", "02"), ("3", "03"), ("4", "04"))):
        await ing.process([raw(msg(f"r{n}", ch("telegram", tg), at=f"2026-01-{day}T00:00:00Z"))])
    a, b, cc, d = [await owner(store, f"telegram:{tg}") for tg in "1234"]
    # a chain: cc into b, then b into a (the oldest survives each time)
    await ing.process([raw(msg("r5", ch("telegram", "2"), ch("telegram", "3")))])
    await ing.process([raw(msg("r6", ch("telegram", "1"), ch("telegram", "2")))])
    assert (await store.customers.find_one({"_id": cc}))["merged_into"] == b

    finds = Finds()
    client: AsyncMongoClient = AsyncMongoClient(mongo_url, event_listeners=[finds])
    try:
        watched = Store(client, client[store.db.name])
        assert await merges.roots(watched, [a, b, cc, d, "never-merged"]) == {
            a: a,
            b: a,
            cc: a,
            d: d,
            "never-merged": "never-merged",
        }
        # the log names b and cc: only they and the customers on their way are read
        assert finds.customers_asked() == {b, cc, a}
        finds.filters.clear()
        assert await merges.roots(watched, [d, "never-merged"]) == {
            d: d,
            "never-merged": "never-merged",
        }
        assert [coll for coll, _ in finds.filters] == ["merges"]
        # an unmerge brings the customer back to life; the log still names it, and the read
        # of the customer settles it
        entry = await store.merges.find_one({"loser_id": b, "state": "done"})
        await merges.unmerge(store, entry["_id"], c.utcnow())
        assert await merges.roots(watched, [b, cc]) == {b: b, cc: b}
    finally:
        await client.close()


class Commands(monitoring.CommandListener):
    """Each command a client sends: (name, collection)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, str(event.command.get(event.command_name))))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_batch_of_merges_sends_each_step_once_however_many_merges_it_holds(
    store, mongo_url
) -> None:
    ing = Ingestor(store, Recorder())
    await ing.process(
        [
            raw(
                msg(
                    f"p{n}",
                    ch("telegram", str(100 + n)),
                    at=f"2026-01-{n + 1:02d}T00:00:00Z",
                    thread=f"t{n}",
                )
            )
            for n in range(16)
        ]
    )
    cust = [await owner(store, f"telegram:{100 + n}") for n in range(16)]
    assert len(set(cust)) == 16

    def req(i: int, j: int) -> merges.Request:
        return merges.Request(f"m{i}-{j}", cust[j], cust[i], "test", f"telegram:{100 + j}")

    commands = Commands()
    client: AsyncMongoClient = AsyncMongoClient(mongo_url, event_listeners=[commands])
    try:
        watched = Store(client, client[store.db.name])
        two = await merges.merge_many(watched, [req(0, 1), req(2, 3)], c.utcnow())
        sent_for_two = list(commands.sent)
        commands.sent.clear()
        pairs = [(4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 15)]
        six = await merges.merge_many(watched, [req(i, j) for i, j in pairs], c.utcnow())
        assert commands.sent == sent_for_two  # one command a step, not one a step and merge
        assert len(sent_for_two) <= 20
        # the older customer survives, whichever way round the merge was asked
        for entry, (i, j) in zip([*two, *six], [(0, 1), (2, 3), *pairs], strict=True):
            assert entry is not None and entry["state"] == "done"
            assert (entry["survivor_id"], entry["loser_id"]) == (cust[i], cust[j])

        # a chain in one call: 3 (now part of 2) with 1 (part of 0), which is already part
        # of 0, then 5 (part of 4) with 3, which only the first merge makes part of 0
        commands.sent.clear()
        chain = await merges.merge_many(watched, [req(1, 3), req(0, 1), req(3, 5)], c.utcnow())
        assert chain[1] is None
        assert chain[0] is not None and (chain[0]["survivor_id"], chain[0]["loser_id"]) == (
            cust[0],
            cust[2],
        )
        assert chain[2] is not None and (chain[2]["survivor_id"], chain[2]["loser_id"]) == (
            cust[0],
            cust[4],
        )
        # two rounds: the second waits for the first's merge of 2 into 0; following the
        # chains to their roots costs a few reads more
        assert commands.sent.count(("insert", "merges")) == 2
        assert len(commands.sent) <= 2 * len(sent_for_two) + 8
    finally:
        await client.close()
    for n in range(6):
        assert await owner(store, f"telegram:{100 + n}") == cust[0]
    assert await store.interactions.count_documents({"customer_id": cust[0]}) == 6
    survivor = await store.customers.find_one({"_id": cust[0]})
    assert {f"telegram:{100 + n}" for n in range(6)} <= set(survivor["identifiers"])
    for n in range(1, 6):
        assert (await store.customers.find_one({"_id": cust[n]}))["merged_into"] in cust[:5]
    assert await merges.roots(store, cust[:6]) == {x: cust[0] for x in cust[:6]}
    await partition(store)  # every identifier on a live customer, the log names every tombstone


async def test_merging_customers_with_an_active_conversation_on_one_thread(store) -> None:
    ing = Ingestor(store, Recorder())
    await ing.process([raw(msg("s1", ch("api", "crm-1"), at="2026-01-01T00:00:00Z"))])
    await ing.process([raw(msg("s2", ch("api", "crm-2"), at="2026-01-02T00:00:00Z"))])
    await ing.process([raw(msg("s3", ch("api", "crm-1"), ch("api", "crm-2")))])
    assert await store.conversations.count_documents({"active": True}) == 1
    merged = await store.conversations.find_one({"state": "merged"})
    assert merged is not None and merged["active"] is False
    entry = await store.merges.find_one({})
    await merges.unmerge(store, entry["_id"], c.utcnow())
    assert await store.conversations.count_documents({"active": True}) == 2


# ---------------------------------------------------------------------------- races
def population(rng: random.Random, people: int, messages: int) -> list[c.Message]:
    """People with a phone, an email and a Telegram id; each message carries one or two of
    one person's identifiers, so links appear in random order."""
    idents = [
        [
            ch("phone", f"0912{p:07d}"),
            ch("email", f"user{p}@example.com"),
            ch("telegram", str(1000 + p)),
        ]
        for p in range(people)
    ]
    out = []
    for n in range(messages):
        person = idents[rng.randrange(people)]
        out.append(
            msg(
                f"m{n}",
                *rng.sample(person, rng.choice((1, 1, 2))),
                at=f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z",
            )
        )
    return out


async def partition(store) -> tuple[set[frozenset[str]], set[frozenset[str]]]:
    """Groups of identifiers and of messages that share a customer."""
    by_cust: dict[str, set[str]] = defaultdict(set)
    async for d in store.identities.find({}):
        by_cust[d["customer_id"]].add(d["_id"])
    msgs: dict[str, set[str]] = defaultdict(set)
    async for d in store.interactions.find({}, {"customer_id": 1, "source_id": 1}):
        msgs[d["customer_id"]].add(d["source_id"])
    live = {
        d["_id"]
        async for d in store.customers.find(
            {"merged_into": None, "pending": {"$ne": True}}, {"_id": 1}
        )
    }
    if not set(by_cust) <= live:
        bad = sorted(set(by_cust) - live)[:3]
        docs = [d async for d in store.customers.find({"_id": {"$in": bad}})]
        raise AssertionError(f"identifiers belong to non-live customers: {docs}")
    assert set(msgs) <= live, "a message belongs to a tombstone"
    # merges.roots asks the merge log which customers may be tombstones: each one must be there
    tombstones = {d["_id"] async for d in store.customers.find({"merged_into": {"$ne": None}})}
    losers = {d["loser_id"] async for d in store.merges.find({}, {"loser_id": 1})}
    assert tombstones <= losers, f"tombstones the merge log does not name: {tombstones - losers}"
    await assert_orphans(store, live - set(by_cust))  # or a customer lost its identifiers
    return {frozenset(v) for v in by_cust.values()}, {frozenset(v) for v in msgs.values()}


async def settled_partition(store, timeout: float = 30.0) -> tuple[set[frozenset[str]], ...]:
    """The partition once in-flight batches (in other processes) have settled."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await partition(store)
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.parametrize("seed", range(int(os.environ.get("OMNIHUB_RACE_SEEDS", "6"))))
async def test_racing_resolvers_end_where_a_serial_one_does(store, mongo_url, seed: int) -> None:
    from store.mongo import connect, ensure_indexes

    rng = random.Random(seed)
    messages = population(rng, people=12, messages=90)
    serial = connect(mongo_url, f"{store.db.name}_serial")
    await ensure_indexes(serial)
    try:
        one = Ingestor(serial, Recorder())
        for i in range(0, len(messages), 10):
            await one.process([raw(m) for m in messages[i : i + 10]])
        expected = await partition(serial)
    finally:
        await serial.client.drop_database(serial.db.name)
        await serial.close()
    # five resolvers take overlapping random batches concurrently, every message at least once
    batches: list[list[Any]] = [[raw(m) for m in messages[i::5]] for i in range(5)]
    for _ in range(5):
        batches.append([raw(m) for m in rng.sample(messages, 15)])
    rng.shuffle(batches)
    ingestors = [Ingestor(store, Recorder()) for _ in range(5)]
    await asyncio.gather(*(ingestors[i % 5].process(b) for i, b in enumerate(batches)))
    assert await partition(store) == expected
    assert await store.interactions.count_documents({}) == len(messages)


async def test_a_claim_and_the_real_owner_in_one_batch_still_suggest(store) -> None:
    ing = Ingestor(store, Recorder())
    await ing.process(
        [
            raw(msg("form", ch("webchat", "v-77"), claimed("email", "leila@example.com"))),
            raw(msg("mail", ch("email", "leila@example.com"))),
        ]
    )
    sug = await store.suggestions.find_one({"identifier": "email:leila@example.com"})
    assert sug is not None and sug["reason"] == "claimed"


async def test_merge_history_lists_both_sides_newest_first_without_scanning_all_merges(
    store,
) -> None:
    """A customer view reads its merge history on every lookup. SecantusDB answers an ``$or``
    of survivor and loser by scanning every merge, so history reads each side by its index;
    timed against one indexed read on the same data, so the machine's speed cancels out."""
    from datetime import UTC, datetime, timedelta

    from store.mongo import ensure_indexes

    await ensure_indexes(store)
    await store.merges.delete_many({})
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    others = [
        {
            "_id": f"m{i}",
            "survivor_id": f"s{i}",
            "loser_id": f"l{i}",
            "state": "done",
            "created_at": t0 + timedelta(seconds=i),
            "snapshot": {"identities": ["x"] * 5},
        }
        for i in range(3000)
    ]
    mine = [
        {
            "_id": "a",
            "survivor_id": "me",
            "loser_id": "x1",
            "state": "done",
            "created_at": t0 + timedelta(days=1),
            "snapshot": {},
        },
        {
            "_id": "b",
            "survivor_id": "x2",
            "loser_id": "me",
            "state": "undone",
            "created_at": t0 + timedelta(days=3),
            "snapshot": {},
        },
        {
            "_id": "c",
            "survivor_id": "me",
            "loser_id": "x3",
            "state": "done",
            "created_at": t0 + timedelta(days=2),
            "snapshot": {},
        },
    ]
    await store.merges.insert_many(others + mine)

    got = await merges.history(store, "me")
    assert [d["_id"] for d in got] == ["b", "c", "a"]
    assert all("snapshot" not in d for d in got)
    assert [d["_id"] for d in await merges.history(store, "me", limit=2)] == ["b", "c"]
    assert await merges.history(store, "nobody") == []

    one_read = await fastest(lambda: store.merges.find({"survivor_id": "me"}).to_list())
    history = await fastest(lambda: merges.history(store, "me"))
    assert history < 6 * one_read + 0.02, (history, one_read)


@pytest.mark.parametrize("down_for", [timedelta(0), timedelta(days=2)], ids=["at-once", "2-days"])
async def test_a_message_stored_while_an_unmerge_runs_goes_back_even_if_the_batch_is_replayed(
    store, monkeypatch: pytest.MonkeyPatch, down_for: timedelta
) -> None:
    """As above, but the worker dies right after storing the message, before it could take
    the message back: the replay finds it stored on the customer sara was split from, and
    must move it all the same (the replay reads her email as her own customer's by then).
    Also when the worker stays down for days: the unmerge's mark is that old by the replay."""
    from pymongo.errors import AutoReconnect

    from store import interactions

    pub = Recorder()
    ing = Ingestor(store, pub, retry_max=0.01)
    phone_cust, email_cust = await sara_merged(store, ing)
    entry = await store.merges.find_one({})
    record_many = interactions.record_many
    calls = 0

    async def unmerged_then_died(store_: Store, docs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await merges.unmerge(store, entry["_id"], c.utcnow() - down_for, by="supervisor-1")
        await record_many(store_, docs)
        if calls == 1:
            raise AutoReconnect("worker died after storing the batch (test)")

    monkeypatch.setattr(interactions, "record_many", unmerged_then_died)
    pub.records.clear()
    await ing.process([raw(msg("e-late", ch("email", "sara@example.com"), thread="t2"))])
    assert calls == 2
    on = {d["source_id"]: d["customer_id"] async for d in store.interactions.find({})}
    assert on == {"p1": phone_cust, "e1": email_cust, "link": email_cust, "e-late": email_cust}
    conv = await store.conversations.find_one({"thread": "t2"})
    assert conv["customer_id"] == email_cust and conv["active"]
    recorded = [json.loads(r.value) for r in pub.records]
    assert [e["data"]["customer_id"] for e in recorded if e["type"] == c.INTERACTION_RECORDED] == [
        email_cust
    ]


async def test_unmerge_marks_are_kept_a_week_and_an_older_expiry_is_retuned(store) -> None:
    """A replay may come days after its batch's first attempt: the marks it reads must still
    be there. A database set up by an earlier version (marks kept an hour) is retuned."""
    await store.splits.drop_index("expiry")
    await store.splits.create_index([("at", 1)], name="expiry", expireAfterSeconds=3600)
    await store.splits.insert_one({"_id": "m", "customer_id": "c", "at": c.utcnow()})
    await ensure_indexes(store)
    ix = {i["name"]: i async for i in await store.splits.list_indexes()}
    assert ix["expiry"]["expireAfterSeconds"] == 7 * 86400
    assert ix["expiry"]["key"] == {"at": 1}
    await ensure_indexes(store)  # and again: nothing to do
    assert await store.splits.count_documents({}) == 1


async def test_a_batch_probes_unmerge_marks_only_when_one_is_under_an_hour_old(
    store, mongo_url
) -> None:
    """Marks are kept a week for replays, but a fresh batch read its senders a moment ago:
    an older mark cannot concern it, and must not cost it the probe of its customers."""
    await Ingestor(store, Recorder()).process([raw(msg("p1", ch("phone", "09121234567")))])
    cust = await owner(store, "phone:+989121234567")
    mark = {"customer_id": cust, "merge_id": "m", "identifiers": ["email:x@example.com"]}
    await store.splits.insert_one({"_id": "old", **mark, "at": c.utcnow() - timedelta(hours=2)})
    finds = Finds()
    client: AsyncMongoClient = AsyncMongoClient(mongo_url, event_listeners=[finds])
    try:
        ing = Ingestor(Store(client, client[store.db.name]), Recorder())
        await ing.process([raw(msg("p2", ch("phone", "09121234567")))])
        splits = [q for coll, q in finds.filters if coll == "unmerge_splits"]
        assert len(splits) == 1  # is there any recent mark: no
        await store.splits.insert_one({"_id": "new", **mark, "at": c.utcnow()})
        finds.filters.clear()
        await ing.process([raw(msg("p3", ch("phone", "09121234567")))])
        splits = [q for coll, q in finds.filters if coll == "unmerge_splits"]
        assert len(splits) == 2  # yes: which of ours are marked (recently)
        assert splits[1]["customer_id"] == {"$in": [cust]} and "at" in splits[1]
    finally:
        await client.close()
    assert {d["source_id"] async for d in store.interactions.find({"customer_id": cust})} == {
        "p1",
        "p2",
        "p3",
    }


async def test_a_merge_adding_identifiers_an_unmerge_took_back_meanwhile_drops_them(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent's unmerge of l from s has checked that s was not merged again; a worker then
    merges s into the older a and reads what s's document lists (l's identifier among them);
    the unmerge takes l's things back from a; only then does the merge add what it read to a.
    a must not list an identifier l owns."""
    ing = Ingestor(store, Recorder())
    a, s, l_ = await three_customers(store, ing)
    entry = await merges.merge(
        store, "m-l", s, l_, reason="t", identifier=None, trigger=None, now=c.utcnow()
    )
    assert entry is not None
    real_find_in = merges.find_in
    undone = False

    async def unmerged_meanwhile(coll: Any, field: str, values: Any, *args: Any, **kw: Any) -> Any:
        nonlocal undone
        found = await real_find_in(coll, field, values, *args, **kw)
        if not undone and kw.get("projection") == {"identifiers": 1, "name_tokens": 1}:
            undone = True  # the merge of s read s's identifiers: the unmerge runs now
            started = await store.merges.find_one_and_update(
                {"_id": "m-l"}, {"$set": {"state": "undoing"}}, return_document=True
            )
            await merges._undo(store, started, c.utcnow())
        return found

    monkeypatch.setattr(merges, "find_in", unmerged_meanwhile)
    await merges.merge(
        store, "m-s", a, s, reason="t", identifier=None, trigger=None, now=c.utcnow()
    )
    assert undone
    assert await owner(store, "telegram:333") == l_
    docs = {d["_id"]: d async for d in store.customers.find({"_id": {"$in": [a, l_]}})}
    assert "telegram:333" in docs[l_]["identifiers"]
    assert "telegram:333" not in docs[a]["identifiers"]
    assert {"telegram:111", "telegram:222"} <= set(docs[a]["identifiers"])
