"""agents: support agents, their roles, skills, teams, capacities, presence and held work.

Capacity is guarded here, atomically: ``holds.<channel>`` lists the conversations an agent
holds (offered or assigned) on that channel, and a reservation only matches while that list is
shorter than the channel's capacity and does not hold the conversation yet. Releasing is a
``$pull`` of one id, so doing it twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo.errors import OperationFailure

from store.mongo import Doc, Store, find_in, guarded_update

SECRET_FIELDS = {"password_hash": 0}
ROLES = ("agent", "supervisor", "admin")
STATUSES = ("online", "away", "offline")


def load_of(doc: Doc) -> dict[str, int]:
    """Conversations held per channel (from the ``holds`` lists)."""
    return {ch: len(ids) for ch, ids in (doc.get("holds") or {}).items()}


async def migrate(store: Store) -> None:
    """Drop what earlier versions created and this one must not keep (idempotent)."""
    try:
        # the first cut stored one permanent token per agent, unique; agents now log in
        await store.agents.drop_index("by_token")
    except OperationFailure:
        pass  # not there: nothing to do


async def create(store: Store, doc: Doc) -> None:
    """Insert an agent; raises DuplicateKeyError if the email is taken."""
    await store.agents.insert_one(doc)


async def get(store: Store, agent_id: str) -> Doc | None:
    return await store.agents.find_one({"_id": agent_id}, SECRET_FIELDS)


async def by_email(store: Store, email: str) -> Doc | None:
    """The agent with this login email, password hash included (for login only)."""
    return await store.agents.find_one({"email": email})


async def list_all(store: Store, limit: int = 500) -> list[Doc]:
    cursor = store.agents.find({}, SECRET_FIELDS).sort("created_at", 1).limit(limit)
    return [d async for d in cursor]


async def update(store: Store, agent_id: str, fields: Doc) -> Doc | None:
    return await guarded_update(
        store.agents, {"_id": agent_id}, {"$set": fields}, projection=SECRET_FIELDS
    )


async def online(store: Store, ids: Sequence[str] | None = None) -> list[Doc]:
    """Active agents taking work now (status online)."""
    query: dict[str, Any] = {"status": "online", "active": True}
    if ids is not None:
        return await find_in(store.agents, "_id", ids, query, SECRET_FIELDS)
    cursor = store.agents.find(query, SECRET_FIELDS)
    return [d async for d in cursor]


async def set_status(store: Store, agent_id: str, status: str, now: datetime) -> bool:
    """Set presence; False if there is no such agent.

    One update, no read: every socket that opens or closes comes here, so a team of 1,000
    reconnecting after a restart must not cost the store a collection scan each (see
    :func:`store.mongo.guarded_update`)."""
    res = await store.agents.update_one(
        {"_id": agent_id}, {"$set": {"status": status, "seen_at": now}}
    )
    return res.matched_count == 1


async def heartbeat(store: Store, agent_ids: Sequence[str], now: datetime) -> None:
    """Agents are still there (their socket is open): move ``seen_at`` forward."""
    if agent_ids:
        await store.agents.update_many(
            {"_id": {"$in": list(agent_ids)}, "status": {"$ne": "offline"}},
            {"$set": {"seen_at": now}},
        )


async def stale(store: Store, cutoff: datetime) -> list[Doc]:
    """Agents marked present whose last sign of life is older than ``cutoff``."""
    cursor = store.agents.find(
        {"status": {"$ne": "offline"}, "seen_at": {"$lt": cutoff}}, {"_id": 1, "seen_at": 1}
    )
    return [d async for d in cursor]


async def mark_gone(store: Store, agent_id: str, seen_at: datetime) -> bool:
    """Offline, unless the agent showed a sign of life since ``seen_at`` was read."""
    res = await store.agents.update_one(
        {"_id": agent_id, "seen_at": seen_at, "status": {"$ne": "offline"}},
        {"$set": {"status": "offline"}},
    )
    return res.modified_count == 1


async def reserve(
    store: Store,
    agent_id: str,
    channel: str,
    capacity: int,
    conversation_id: str,
    now: datetime,
    *,
    require_online: bool = True,
) -> Doc | None:
    """Hold one unit of the agent's ``channel`` capacity for a conversation, atomically.

    Matches only while the agent holds fewer than ``capacity`` conversations on the channel,
    the capacity is still ``capacity`` (an admin may have changed it) and the conversation is
    not held yet. None if any guard fails.
    """
    held = await reserve_many(
        store, agent_id, channel, capacity, [conversation_id], now, require_online=require_online
    )
    return {"_id": agent_id} if held else None


async def reserve_many(
    store: Store,
    agent_id: str,
    channel: str,
    capacity: int,
    conversation_ids: Sequence[str],
    now: datetime,
    *,
    require_online: bool = True,
) -> bool:
    """Hold a unit for each of ``conversation_ids`` at once: all of them or none, under the
    same guards as :func:`reserve` (room for all, capacity unchanged, none held yet)."""
    wanted = list(dict.fromkeys(conversation_ids))
    if capacity <= 0 or not wanted or len(wanted) > capacity:
        return False
    query: Doc = {
        "_id": agent_id,
        "active": True,
        f"capacity.{channel}": capacity,
        f"holds.{channel}.{capacity - len(wanted)}": {"$exists": False},
        f"holds.{channel}.id": {"$nin": wanted},
    }
    if require_online:
        query["status"] = "online"
    res = await store.agents.update_one(
        query,
        {
            "$push": {f"holds.{channel}": {"$each": [{"id": k, "at": now} for k in wanted]}},
            "$set": {"last_offered_at": now},
        },
    )
    return res.matched_count == 1


async def release(
    store: Store,
    agent_id: str,
    channel: str,
    conversation_id: str,
    before: datetime | None = None,
) -> bool:
    """Give back the unit held for a conversation (idempotent); ``before`` only releases a
    hold taken before that time (the leak sweep must not touch a reservation in flight)."""
    cond: Doc = {"id": conversation_id}
    if before is not None:
        cond["at"] = {"$lt": before}
    res = await store.agents.update_one({"_id": agent_id}, {"$pull": {f"holds.{channel}": cond}})
    return res.modified_count == 1


async def release_many(
    store: Store, agent_id: str, channel: str, conversation_ids: Sequence[str]
) -> None:
    """Give back the units held for several conversations in one write (idempotent)."""
    if conversation_ids:
        await store.agents.update_one(
            {"_id": agent_id},
            {"$pull": {f"holds.{channel}": {"id": {"$in": list(conversation_ids)}}}},
        )


async def with_holds(store: Store) -> list[Doc]:
    """Agents and what they hold (for the sweep that returns leaked holds)."""
    cursor = store.agents.find({"holds": {"$exists": True}}, {"holds": 1})
    return [d async for d in cursor]
