"""identities: normalised identifier (``_id``) → customer_id. The unique ``_id`` is the guard."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from store.mongo import Store, find_in, insert_new


async def lookup(store: Store, identifiers: Iterable[str]) -> dict[str, str]:
    """Owner customer of each known identifier, one ``$in`` query."""
    ids = sorted(set(identifiers))
    if not ids:
        return {}
    docs = await find_in(store.identities, "_id", ids, projection={"customer_id": 1})
    return {doc["_id"]: doc["customer_id"] for doc in docs}


async def link(store: Store, proposed: Mapping[str, str], now: datetime) -> dict[str, str]:
    """Link each identifier to its proposed customer unless it already has one.

    Returns the owner of every identifier afterwards: another writer may have won a race,
    in which case its customer is the owner and the caller must use it.
    """
    if not proposed:
        return {}
    idents = list(proposed)
    docs = [{"_id": i, "customer_id": proposed[i], "linked_at": now} for i in idents]
    taken = [idents[i] for i in await insert_new(store.identities, docs)]
    if not taken:
        return dict(proposed)
    # linked before us (another writer, or this batch before a crash): the store's owner wins
    out = {i: c for i, c in proposed.items() if i not in set(taken)}
    out.update(await lookup(store, taken))
    return out


async def of_customer(store: Store, customer_id: str) -> list[str]:
    cursor = store.identities.find({"customer_id": customer_id}, {"_id": 1}).sort("_id", 1)
    return [doc["_id"] async for doc in cursor]
