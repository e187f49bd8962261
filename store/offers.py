"""offers: a conversation offered to one agent, pending until accepted, declined or expired.

The pending → closed transition is a guarded update, so exactly one actor (accept, decline,
the expiry sweep, a presence loss) wins it and does the follow-up (release, re-route).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from store.mongo import Doc, Store, find_in, guarded_update


async def create(store: Store, doc: Doc) -> None:
    await store.offers.insert_one(doc)


async def create_many(store: Store, docs: Sequence[Doc]) -> None:
    if docs:
        await store.offers.insert_many(list(docs), ordered=False)


async def get(store: Store, offer_id: str) -> Doc | None:
    return await store.offers.find_one({"_id": offer_id})


async def states(store: Store, offer_ids: Sequence[str]) -> dict[str, str]:
    """offer id → state, for the offers that exist."""
    docs = await find_in(store.offers, "_id", offer_ids, projection={"state": 1})
    return {d["_id"]: d["state"] for d in docs}


async def cancel_many(store: Store, offer_ids: Sequence[str], now: datetime) -> None:
    """Cancel offers that are still pending (those closed meanwhile keep their outcome)."""
    if offer_ids:
        await store.offers.update_many(
            {"_id": {"$in": list(offer_ids)}, "state": "pending"},
            {"$set": {"state": "cancelled", "closed_at": now}},
        )


async def pending_for(store: Store, agent_id: str) -> list[Doc]:
    cursor = store.offers.find({"agent_id": agent_id, "state": "pending"}).sort("created_at", 1)
    return [d async for d in cursor]


async def transition(
    store: Store,
    offer_id: str,
    to: str,
    now: datetime,
    *,
    agent_id: str | None = None,
    unexpired: bool = False,
    fetch: bool = True,
) -> Doc | None:
    """Move a pending offer to ``to``; None if it is no longer pending (someone else won).
    Without ``fetch`` a won transition returns just ``{"_id": …}``."""
    query: Doc = {"_id": offer_id, "state": "pending"}
    if agent_id is not None:
        query["agent_id"] = agent_id
    if unexpired:
        query["expires_at"] = {"$gt": now}
    return await guarded_update(
        store.offers, query, {"$set": {"state": to, "closed_at": now}}, fetch=fetch
    )


async def expired(store: Store, now: datetime, limit: int = 200) -> list[Doc]:
    cursor = store.offers.find({"state": "pending", "expires_at": {"$lte": now}}).limit(limit)
    return [d async for d in cursor]
