"""store.mongo.insert_new (create unless present) and the SLA timers set through it, against a
real SecantusDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymongo import IndexModel
from pymongo.errors import BulkWriteError

from store import mongo, sla_timers

pytestmark = pytest.mark.integration


async def test_insert_new_names_the_documents_whose_key_is_taken_and_writes_the_rest(
    store,
) -> None:
    coll = store.db["insert_new_probe"]
    await coll.drop()
    await coll.create_indexes([IndexModel("email", unique=True, name="by_email")])
    await coll.insert_many([{"_id": "a", "email": "a@x"}, {"_id": "b", "email": "b@x"}])

    docs = [
        {"_id": "a", "email": "other@x"},  # _id taken
        {"_id": "c", "email": "c@x"},
        {"_id": "d", "email": "b@x"},  # another unique index: email taken
        {"_id": "e", "email": "e@x"},
    ]
    assert await mongo.insert_new(coll, docs) == [0, 2]
    stored = {d["_id"]: d["email"] async for d in coll.find({})}
    assert stored == {"a": "a@x", "b": "b@x", "c": "c@x", "e": "e@x"}  # the taken ones untouched

    assert await mongo.insert_new(coll, [{"_id": "f", "email": "f@x"}]) == []
    assert await mongo.insert_new(coll, []) == []


async def test_insert_new_raises_what_is_not_a_taken_key(store) -> None:
    coll = store.db["insert_new_probe"]
    await coll.drop()
    await store.db.create_collection(
        "insert_new_probe", validator={"$jsonSchema": {"required": ["email"]}}
    )
    with pytest.raises(BulkWriteError):
        await mongo.insert_new(coll, [{"_id": "x", "email": "x@x"}, {"_id": "y"}])
    await coll.drop()


async def test_arming_sets_new_timers_and_moves_those_already_set(store) -> None:
    timers = store.db[sla_timers.COLLECTION]
    await timers.delete_many({})
    t0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    await sla_timers.arm(store, {"k1": t0, "k2": t0})

    later = t0 + timedelta(minutes=5)
    await sla_timers.arm(store, {"k1": later, "k3": later, "k4": None})  # k1 moves, k3 is new
    armed = {d["_id"]: d["at"].replace(tzinfo=UTC) async for d in timers.find({})}
    assert armed == {"k1": later, "k2": t0, "k3": later}  # None leaves k4 unset
