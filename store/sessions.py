"""sessions: agents' logins. Only a hash of each session token is stored; a TTL index drops
expired sessions (lazily, so reads check ``expires_at`` too)."""

from __future__ import annotations

from datetime import datetime

from pymongo.asynchronous.collection import AsyncCollection

from store.mongo import Doc, Store


def _col(store: Store) -> AsyncCollection[Doc]:
    return store.db["sessions"]


async def create(store: Store, doc: Doc) -> None:
    await _col(store).insert_one(doc)


async def valid(store: Store, token_hash: str, now: datetime) -> Doc | None:
    return await _col(store).find_one({"_id": token_hash, "expires_at": {"$gt": now}})


async def delete(store: Store, token_hash: str) -> bool:
    res = await _col(store).delete_one({"_id": token_hash})
    return res.deleted_count == 1


async def delete_for_agent(store: Store, agent_id: str) -> int:
    res = await _col(store).delete_many({"agent_id": agent_id})
    return res.deleted_count
