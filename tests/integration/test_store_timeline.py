"""store.interactions.timeline: cursor pages against a real SecantusDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from store import interactions
from store.mongo import ensure_indexes
from tests.timing import fastest

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def doc(i: int, customer: str, at: datetime) -> dict[str, Any]:
    return {"_id": f"i{i:05d}", "customer_id": customer, "occurred_at": at, "text": "x" * 100}


async def test_cursor_pages_walk_a_timeline_once_even_through_messages_of_one_instant(
    store,
) -> None:
    await ensure_indexes(store)
    await store.interactions.delete_many({})
    noise = [doc(i, f"other{i % 500}", T0 + timedelta(seconds=i)) for i in range(3000)]
    same = T0 + timedelta(hours=5)  # seven messages at one instant, across page boundaries
    mine = [doc(10_000 + i, "me", T0 + timedelta(minutes=i)) for i in range(20)]
    mine += [doc(20_000 + i, "me", same) for i in range(7)]
    mine += [doc(30_000 + i, "merged", T0 + timedelta(minutes=i, seconds=30)) for i in range(5)]
    await store.interactions.insert_many(noise + mine)

    expected = sorted(mine, key=lambda d: (d["occurred_at"], d["_id"]), reverse=True)
    seen: list[str] = []
    before = None
    pages = 0
    while True:
        page = await interactions.timeline(store, ["me", "merged"], limit=4, before=before)
        if not page:
            break
        pages += 1
        seen += [d["_id"] for d in page]
        before = (page[-1]["occurred_at"], page[-1]["_id"])
    assert seen == [d["_id"] for d in expected]
    assert pages == 8

    # a later page reads through the timeline index, like the first one: timed against the
    # first page on the same data (SecantusDB scanned all 3,032 interactions for the $or
    # form of this query: ~0.2 s here, growing with every interaction stored)
    mid = expected[10]
    first = await fastest(lambda: interactions.timeline(store, ["me"], limit=4))
    later = await fastest(
        lambda: interactions.timeline(
            store, ["me"], limit=4, before=(mid["occurred_at"], mid["_id"])
        )
    )
    assert later < 6 * first + 0.02, (later, first)
