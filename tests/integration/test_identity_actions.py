"""What supervisors do with identities: confirm/reject suggestions, unmerge, verify codes."""

from __future__ import annotations

import json
import re

import pytest
from pymongo import AsyncMongoClient

from hub.customers import profile, profile_of
from hub.identity import IdentityActionError, IdentityActions
from pipeline import contract as c
from pipeline import topics
from pipeline.agents.ingest import Ingestor
from store.mongo import Store
from tests.integration.test_ingest import Recorder, raw
from tests.integration.test_merges import Commands, ch, claimed, msg, owner
from tests.integration.test_router import Reads

pytestmark = pytest.mark.integration


async def two_customers_and_a_claim(store) -> tuple[str, str]:
    ing = Ingestor(store, Recorder())
    await ing.process([raw(msg("m1", ch("email", "nima@example.com"), at="2026-01-01T00:00:00Z"))])
    await ing.process([raw(msg("c1", ch("webchat", "v-1"), claimed("email", "nima@example.com")))])
    return await owner(store, "email:nima@example.com"), await owner(store, "webchat:v-1")


async def test_confirming_a_suggestion_merges_and_announces_it(store) -> None:
    mail, visitor = await two_customers_and_a_claim(store)
    pub = Recorder()
    actions = IdentityActions(store, pub)
    sug = await store.suggestions.find_one({})
    done = await actions.decide(sug["_id"], True, by="sup-1")
    assert done["state"] == "confirmed" and done["merge_id"]
    assert await owner(store, "webchat:v-1") == mail  # the older customer survives
    events = [json.loads(r.value) for r in pub.records]
    assert [e["type"] for e in events] == [c.CUSTOMER_MERGED]
    assert events[0]["data"] == {
        "merge_id": done["merge_id"],
        "survivor_id": mail,
        "merged_id": visitor,
        "reason": "suggestion confirmed by sup-1",
    }
    # confirming twice is harmless; rejecting a confirmed one is a conflict
    assert (await actions.decide(sug["_id"], True, by="sup-1"))["state"] == "confirmed"
    with pytest.raises(IdentityActionError) as err:
        await actions.decide(sug["_id"], False, by="sup-1")
    assert err.value.status == 409
    # and the merge can be undone by naming the absorbed customer
    undone = await actions.unmerge(visitor, None, by="sup-1")
    assert undone["state"] == "undone"
    assert await owner(store, "webchat:v-1") == visitor
    assert json.loads(pub.records[-1].value)["type"] == c.CUSTOMER_UNMERGED


async def test_rejecting_a_suggestion_keeps_the_two_apart(store) -> None:
    mail, visitor = await two_customers_and_a_claim(store)
    actions = IdentityActions(store, Recorder())
    sug = await store.suggestions.find_one({})
    assert (await actions.decide(sug["_id"], False, by="sup-1"))["state"] == "rejected"
    assert (await store.customers.find_one({"_id": mail}))["separated_from"] == [visitor]
    assert await owner(store, "webchat:v-1") == visitor


async def test_a_verification_code_proves_a_claim_and_links_it(store) -> None:
    mail, visitor = await two_customers_and_a_claim(store)
    pub = Recorder()
    actions = IdentityActions(store, pub, senders={"email": "support@shop.example"})
    ver = await actions.start_verification(visitor, "email:nima@example.com")
    (sent,) = pub.records
    assert sent.topic == topics.outbound("email")
    reply = json.loads(sent.value)
    assert reply["type"] == c.REPLY_REQUESTED
    assert reply["data"]["to"] == ["email:nima@example.com"]
    assert reply["data"]["account"] == "support@shop.example"
    code = re.search(r"\d{6}", reply["data"]["text"]).group()
    assert (
        await store.verifications.find_one({"code_hash": {"$exists": True}, "code": code}) is None
    )
    wrong = "000000" if code != "000000" else "111111"
    with pytest.raises(IdentityActionError) as err:
        await actions.confirm_verification(ver["_id"], wrong)
    assert err.value.field == "code"
    await actions.confirm_verification(ver["_id"], code)
    # the email belonged to an older customer: proving it means they are one person
    assert await owner(store, "webchat:v-1") == mail
    sug = await store.suggestions.find_one({})
    assert sug["state"] == "confirmed"


async def test_codes_expire_after_too_many_wrong_tries(store) -> None:
    _, visitor = await two_customers_and_a_claim(store)
    actions = IdentityActions(store, Recorder())
    ver = await actions.start_verification(visitor, "phone:+989121234567")
    for _ in range(5):
        with pytest.raises(IdentityActionError):
            await actions.confirm_verification(ver["_id"], "999999x"[:6])
    with pytest.raises(IdentityActionError) as err:
        await actions.confirm_verification(ver["_id"], "123456")
    assert err.value.status == 410


async def test_identifiers_that_cannot_receive_a_code_are_refused(store) -> None:
    _, visitor = await two_customers_and_a_claim(store)
    with pytest.raises(IdentityActionError) as err:
        await IdentityActions(store, Recorder()).start_verification(visitor, "webchat:v-2")
    assert err.value.status == 400


async def test_a_profile_reads_merges_and_suggestions_only_of_customers_they_name(
    store, mongo_url
) -> None:
    """A lookup is 6 reads when it reads everything; customers no merge or suggestion ever
    named (most of them) are read in 3. Customers written before the flags read all 6."""
    mail, visitor = await two_customers_and_a_claim(store)
    ing = Ingestor(store, Recorder())
    await ing.process([raw(msg("s1", ch("phone", "+989121112233")))])
    plain = await owner(store, "phone:+989121112233")
    flags = {
        d["_id"]: (d["in_merges"], d["in_suggestions"]) async for d in store.customers.find({})
    }
    assert flags == {mail: (False, True), visitor: (False, True), plain: (False, False)}
    reads = Reads()
    client: AsyncMongoClient = AsyncMongoClient(mongo_url, event_listeners=[reads])
    try:
        watched = Store(client, client[store.db.name])
        got = await profile(watched, plain)
        assert got is not None and got["identifiers"] == ["phone:+989121112233"]
        assert got["merges"] == [] and got["merge_suggestions"] == []
        assert "in_merges" not in got and "in_suggestions" not in got
        assert reads.finds == ["customers", "identities"]
        reads.finds.clear()
        got = await profile(watched, mail)
        assert [s["identifier"] for s in got["merge_suggestions"]] == ["email:nima@example.com"]
        assert reads.finds == ["customers", "identities", "merge_suggestions"]
        # confirming the suggestion merges the two: both are named in the log from then on
        sug = await store.suggestions.find_one({})
        done = await IdentityActions(store, Recorder()).decide(sug["_id"], True, by="sup-1")
        for cid in (mail, visitor):
            assert (await store.customers.find_one({"_id": cid}))["in_merges"] is True
        reads.finds.clear()
        got = await profile(watched, visitor)  # the merged one: its survivor answers
        assert got["id"] == mail and got["requested_id"] == visitor
        assert [m["id"] for m in got["merges"]] == [done["merge_id"]]
        assert reads.finds.count("merges") == 2
        # a customer an earlier version wrote has no flags: everything is read, as before
        await store.customers.update_many({}, {"$unset": {"in_merges": 1, "in_suggestions": 1}})
        await store.suggestions.update_many({}, {"$set": {"state": "open"}})
        got = await profile(watched, mail)
        assert [m["id"] for m in got["merges"]] == [done["merge_id"]]
        assert len(got["merge_suggestions"]) == 1
        reads.finds.clear()
        await profile(watched, plain)
        assert reads.finds == ["customers", "identities", "merges", "merges", "merge_suggestions"]
    finally:
        await client.close()


async def test_a_lookup_by_identifier_is_one_read_for_most_customers(store, mongo_url) -> None:
    """The identity, its customer and the customer's identifiers come in one aggregate; a
    lookup that lands on a customer a merge is moving follows it to the survivor."""
    mail, visitor = await two_customers_and_a_claim(store)
    await Ingestor(store, Recorder()).process([raw(msg("s1", ch("phone", "+989121112233")))])
    plain = await owner(store, "phone:+989121112233")
    await store.identities.insert_one({"_id": "phone:+989120000000", "customer_id": plain})
    sent = Commands()
    client: AsyncMongoClient = AsyncMongoClient(mongo_url, tz_aware=True, event_listeners=[sent])
    try:
        watched = Store(client, client[store.db.name])
        got = await profile_of(watched, "phone:+989121112233")
        assert sent.sent == [("aggregate", "identities")]
        assert got == await profile(store, plain)
        assert got["identifiers"] == ["phone:+989120000000", "phone:+989121112233"]
        assert "requested_id" not in got
        sent.sent.clear()
        got = await profile_of(watched, "email:nima@example.com")  # it has a suggestion
        assert sent.sent == [("aggregate", "identities"), ("find", "merge_suggestions")]
        assert got == await profile(store, mail)
        assert await profile_of(watched, "email:nobody@example.com") is None
        # mid-merge: the visitor is a tombstone, its identity not yet re-pointed
        await store.customers.update_one({"_id": visitor}, {"$set": {"merged_into": mail}})
        got = await profile_of(watched, "webchat:v-1")
        assert got["id"] == mail and got["requested_id"] == visitor
        # an identity whose customer is missing (never the case while customers are written
        # first): no customer rather than an error
        await store.identities.insert_one({"_id": "api:ghost", "customer_id": "nobody"})
        assert await profile_of(watched, "api:ghost") is None
    finally:
        await client.close()
