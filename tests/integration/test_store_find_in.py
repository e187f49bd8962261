"""store.mongo.find_in: chunked ``$in`` against a real SecantusDB."""

from __future__ import annotations

import pytest

from store import mongo
from tests.timing import fastest

pytestmark = pytest.mark.integration


async def test_find_in_returns_every_match_across_chunks(store) -> None:
    coll = store.db["find_in_probe"]
    await coll.delete_many({})
    await coll.insert_many(
        [{"_id": f"k{i:04d}", "n": i, "tags": [f"t{i % 7}", "all"]} for i in range(300)]
    )
    wanted = [f"k{i:04d}" for i in range(0, 300, 3)] + ["missing", "k0000"]  # dup + miss
    docs = await mongo.find_in(coll, "_id", wanted, chunk=16)
    assert sorted(d["_id"] for d in docs) == sorted({f"k{i:04d}" for i in range(0, 300, 3)})

    odd = await mongo.find_in(coll, "_id", wanted, {"n": {"$mod": [2, 1]}}, {"n": 1}, chunk=7)
    assert {d["_id"] for d in odd} == {f"k{i:04d}" for i in range(0, 300, 3) if i % 2}
    assert all(set(d) == {"_id", "n"} for d in odd)


async def test_find_in_on_an_array_field_returns_a_document_once(store) -> None:
    coll = store.db["find_in_probe"]
    await coll.delete_many({})
    await coll.insert_many([{"_id": i, "tags": [f"t{i % 7}", "all"]} for i in range(50)])
    # "all" and "t3" fall in different chunks: each matching document still comes once
    docs = await mongo.find_in(coll, "tags", ["all", "x", "y", "t3"], chunk=2)
    assert sorted(d["_id"] for d in docs) == list(range(50))


async def test_find_in_with_nothing_wanted_asks_nothing(store) -> None:
    assert await mongo.find_in(store.db["find_in_probe"], "_id", []) == []


async def test_find_in_uses_the_index_of_its_field_not_of_a_broad_where(store) -> None:
    """The merges a batch replays are found by ``trigger`` among all merges in state done.

    SecantusDB plans with the first indexed field of a filter: led by ``state`` the query
    walked every done merge (~0.4 s at 2,000 and growing with them), led by ``trigger`` it
    reads only its matches. Compared with the same lookup without the state filter, on the
    same data, so the machine's speed cancels out."""
    await mongo.ensure_indexes(store)  # merges: by_trigger and by_state
    await store.merges.delete_many({})
    await store.merges.insert_many(
        [{"_id": f"m{i}", "trigger": f"e{i}", "state": "done"} for i in range(2000)]
    )
    wanted = [f"e{i}" for i in range(0, 2000, 50)] + [f"new{i}" for i in range(60)]
    where = {"state": {"$in": ["done", "undone"]}}

    async def find(w: dict | None) -> list:
        return await mongo.find_in(store.merges, "trigger", wanted, w)

    everything, done = await find(None), await find(where)
    plain = await fastest(lambda: find(None))
    filtered = await fastest(lambda: find(where))
    assert sorted(d["_id"] for d in done) == sorted(d["_id"] for d in everything)
    assert len(done) == 40
    assert filtered < 10 * plain + 0.02, (filtered, plain)
