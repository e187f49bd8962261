"""conversations: a customer's interactions on one channel thread, open → resolved.

At most one conversation per (customer, channel, thread) is ``active``: a partial unique index
guards it, so concurrent workers converge on the same conversation without transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError

from store.mongo import Doc, Store

Key = tuple[str, str, str]  # customer_id, channel, thread

DUPLICATE_KEY = 11000


def key_of(doc: Doc) -> Key:
    return (doc["customer_id"], doc["channel"], doc["thread"])


async def active_for(store: Store, keys: Sequence[Key]) -> dict[Key, Doc]:
    if not keys:
        return {}
    ors = [{"customer_id": c, "channel": ch, "thread": t} for c, ch, t in set(keys)]
    cursor = store.conversations.find({"active": True, "$or": ors})
    return {key_of(d): d async for d in cursor}


async def open_many(store: Store, proposals: Sequence[Doc]) -> dict[Key, Doc]:
    """Open a conversation for each proposal unless its thread already has an active one.

    Returns the active conversation of every proposed key (possibly another writer's).
    """
    if not proposals:
        return {}
    ops = []
    for p in proposals:
        filt = {
            "customer_id": p["customer_id"],
            "channel": p["channel"],
            "thread": p["thread"],
            "active": True,
        }
        fields = {k: v for k, v in p.items() if k not in filt}
        ops.append(UpdateOne(filt, {"$setOnInsert": fields}, upsert=True))
    try:
        await store.conversations.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        # A concurrent writer opened the same thread first: its conversation wins.
        others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
        if others:
            raise
    return await active_for(store, [key_of(p) for p in proposals])


async def touch_many(store: Store, last_at: dict[str, datetime]) -> None:
    """Move each conversation's last_message_at forward (``$max``: replays change nothing)."""
    if not last_at:
        return
    ops = [
        UpdateOne({"_id": cid}, {"$max": {"last_message_at": at}}) for cid, at in last_at.items()
    ]
    await store.conversations.bulk_write(ops, ordered=False)


async def get(store: Store, conversation_id: str) -> Doc | None:
    return await store.conversations.find_one({"_id": conversation_id})


async def of_customer(store: Store, customer_ids: Sequence[str], limit: int = 20) -> list[Doc]:
    cursor = (
        store.conversations.find({"customer_id": {"$in": list(customer_ids)}})
        .sort("opened_at", -1)
        .limit(limit)
    )
    return [d async for d in cursor]


async def claim_for_offer(store: Store, conversation_id: str, offer_id: str) -> Doc | None:
    """Reserve an unassigned conversation for one offer; None if it is taken or offered."""
    return await store.conversations.find_one_and_update(
        {"_id": conversation_id, "assignee": None, "offer_id": None, "active": True},
        {"$set": {"offer_id": offer_id}},
        return_document=ReturnDocument.AFTER,
    )


async def release_offer(store: Store, conversation_id: str, offer_id: str) -> None:
    await store.conversations.update_one(
        {"_id": conversation_id, "offer_id": offer_id}, {"$set": {"offer_id": None}}
    )


async def assign(
    store: Store, conversation_id: str, offer_id: str, agent_id: str, now: datetime
) -> Doc | None:
    """Assign only if the conversation is still reserved for this offer and unassigned."""
    update: dict[str, Any] = {
        "$set": {"assignee": agent_id, "state": "assigned", "assigned_at": now, "offer_id": None}
    }
    return await store.conversations.find_one_and_update(
        {"_id": conversation_id, "offer_id": offer_id, "assignee": None},
        update,
        return_document=ReturnDocument.AFTER,
    )


async def waiting(store: Store, limit: int = 100) -> list[Doc]:
    """Open, unassigned, unoffered conversations, oldest first."""
    cursor = (
        store.conversations.find({"active": True, "assignee": None, "offer_id": None})
        .sort("opened_at", 1)
        .limit(limit)
    )
    return [d async for d in cursor]
