"""agents: support agents, their tokens (hashed) and presence."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ReturnDocument

from store.mongo import Doc, Store

PUBLIC_FIELDS = {"token_hash": 0}


async def create(store: Store, doc: Doc) -> None:
    await store.agents.insert_one(doc)


async def get(store: Store, agent_id: str) -> Doc | None:
    return await store.agents.find_one({"_id": agent_id}, PUBLIC_FIELDS)


async def list_all(store: Store, limit: int = 500) -> list[Doc]:
    cursor = store.agents.find({}, PUBLIC_FIELDS).sort("created_at", 1).limit(limit)
    return [d async for d in cursor]


async def online(store: Store, exclude: list[str] | tuple[str, ...] = ()) -> list[Doc]:
    query: dict[str, Any] = {"online": True, "active": True}
    if exclude:
        query["_id"] = {"$nin": list(exclude)}
    cursor = store.agents.find(query, PUBLIC_FIELDS)
    return [d async for d in cursor]


async def set_presence(store: Store, agent_id: str, online: bool, now: datetime) -> None:
    await store.agents.update_one(
        {"_id": agent_id}, {"$set": {"online": online, "presence_at": now}}
    )


async def reserve_turn(store: Store, agent: Doc, now: datetime) -> Doc | None:
    """Take this agent's round-robin turn, unless another router took it meanwhile."""
    return await store.agents.find_one_and_update(
        {"_id": agent["_id"], "online": True, "last_offered_at": agent.get("last_offered_at")},
        {"$set": {"last_offered_at": now}},
        projection=PUBLIC_FIELDS,
        return_document=ReturnDocument.AFTER,
    )
