"""sla_timers: when the SLA sweep next has to look at a conversation.

``{_id: conversation_id, at}`` with an index on ``at``: the sweep reads the timers that are
due instead of searching the conversations, so its cost follows what is due, not how many
conversations there are (the search it replaces read every conversation ever stored, on
SecantusDB 0.7 s for 20,000 mostly resolved ones, every few seconds).

A timer is set when a conversation gets its SLA clocks (the router classifies it or first
routes it), moved forward by the sweep, and dropped once nothing is left to raise. The sweep
moves and drops a timer only if it still holds the time the sweep read, so a timer set again
meanwhile (a reopened conversation) is never lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pymongo import UpdateOne

from store.mongo import Store, insert_new

COLLECTION = "sla_timers"


async def arm(store: Store, at: Mapping[str, datetime | None]) -> None:
    """Set the timer of each conversation; those with None are left as they are: the sweep
    drops a timer it finds with nothing left to raise. Most conversations get their first
    timer here, so the timers are inserted and only those already present (a reopened
    conversation, a replayed event) are then set in place."""
    docs = [{"_id": cid, "at": when} for cid, when in at.items() if when is not None]
    timers = store.db[COLLECTION]
    present = [docs[i] for i in await insert_new(timers, docs)]
    if present:  # upsert: the sweep may drop a timer between the two writes
        ops = [
            UpdateOne({"_id": d["_id"]}, {"$set": {"at": d["at"]}}, upsert=True) for d in present
        ]
        await timers.bulk_write(ops, ordered=False)


async def due(store: Store, now: datetime, limit: int = 500) -> dict[str, datetime]:
    """Conversation id → timer, of the timers due by ``now`` (an indexed range read)."""
    cursor = store.db[COLLECTION].find({"at": {"$lte": now}}).limit(limit)
    return {d["_id"]: d["at"] async for d in cursor}


async def advance(store: Store, conversation_id: str, read: datetime, at: datetime | None) -> None:
    """Move a timer the sweep read as ``read`` to ``at`` (None: drop it), unless it was set
    again since."""
    timers = store.db[COLLECTION]
    if at is None:
        await timers.delete_one({"_id": conversation_id, "at": read})
    elif at != read:
        await timers.update_one({"_id": conversation_id, "at": read}, {"$set": {"at": at}})
