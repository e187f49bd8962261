"""identities: normalised identifier (``_id``) → customer_id. The unique ``_id`` is the guard."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from pymongo import UpdateOne

from store.mongo import Store


async def lookup(store: Store, identifiers: Iterable[str]) -> dict[str, str]:
    """Owner customer of each known identifier, one ``$in`` query."""
    ids = sorted(set(identifiers))
    if not ids:
        return {}
    cursor = store.identities.find({"_id": {"$in": ids}}, {"customer_id": 1})
    return {doc["_id"]: doc["customer_id"] async for doc in cursor}


async def link(store: Store, proposed: Mapping[str, str], now: datetime) -> dict[str, str]:
    """Link each identifier to its proposed customer unless it already has one.

    Returns the owner of every identifier afterwards: another writer may have won a race,
    in which case its customer is the owner and the caller must use it.
    """
    if not proposed:
        return {}
    ops = [
        UpdateOne(
            {"_id": ident},
            {"$setOnInsert": {"customer_id": customer, "linked_at": now}},
            upsert=True,
        )
        for ident, customer in proposed.items()
    ]
    await store.identities.bulk_write(ops, ordered=False)
    return await lookup(store, proposed)


async def of_customer(store: Store, customer_id: str) -> list[str]:
    cursor = store.identities.find({"customer_id": customer_id}, {"_id": 1}).sort("_id", 1)
    return [doc["_id"] async for doc in cursor]
