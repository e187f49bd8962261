"""notes: agents' internal notes on a conversation (never sent to the customer)."""

from __future__ import annotations

from pymongo.asynchronous.collection import AsyncCollection

from store.mongo import Doc, Store


def _col(store: Store) -> AsyncCollection[Doc]:
    return store.db["notes"]


async def add(store: Store, doc: Doc) -> None:
    await _col(store).insert_one(doc)


async def of_conversation(store: Store, conversation_id: str, limit: int = 100) -> list[Doc]:
    cursor = (
        _col(store).find({"conversation_id": conversation_id}).sort("created_at", 1).limit(limit)
    )
    return [d async for d in cursor]
