"""customers: one document per person; a merged customer stays as a tombstone."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from store.mongo import Doc, Store, find_in
from unify.resolver import CustomerInfo

MAX_TOMBSTONE_HOPS = 16
DUPLICATE_KEY = 11000


@dataclass(frozen=True)
class NewCustomer:
    customer_id: str
    origin_event_id: str
    display_name: str | None
    identifiers: Sequence[str]
    name_tokens: Sequence[str]
    created_at: datetime


async def upsert_many(
    store: Store, items: Sequence[NewCustomer], now: datetime, *, pending: bool = False
) -> None:
    """Create customers that do not exist yet and add identifiers to those that do.

    ``pending`` creates shells before their identities are linked (a customer always exists
    before anything points at it); the ingest batch clears the flag once the link held.
    Pending shells are hidden from search and lists.
    """
    if not items:
        return
    ops = []
    for item in items:
        update: dict[str, Any] = {
            "$setOnInsert": {
                "created_at": item.created_at,
                "origin_event_id": item.origin_event_id,
                "merged_into": None,
            },
            "$addToSet": {
                "identifiers": {"$each": list(item.identifiers)},
                "name_tokens": {"$each": list(item.name_tokens)},
            },
            "$set": {"updated_at": now},
        }
        if pending:
            update["$setOnInsert"]["pending"] = True
        else:
            update["$set"]["pending"] = False
        if item.display_name:
            update["$setOnInsert"]["display_name"] = item.display_name
        ops.append(UpdateOne({"_id": item.customer_id}, update, upsert=True))
    await store.customers.bulk_write(ops, ordered=False)


async def create_shells(store: Store, items: Sequence[NewCustomer], now: datetime) -> None:
    """Insert customers that do not exist yet as pending shells (see :func:`upsert_many`);
    an id that exists already (a replay) is left as it is."""
    if not items:
        return
    docs = [
        {
            "_id": item.customer_id,
            "created_at": item.created_at,
            "origin_event_id": item.origin_event_id,
            "merged_into": None,
            "pending": True,
            "identifiers": list(item.identifiers),
            "name_tokens": list(item.name_tokens),
            "updated_at": now,
            **({"display_name": item.display_name} if item.display_name else {}),
        }
        for item in items
    ]
    try:
        await store.customers.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise


async def get(store: Store, customer_id: str, *, follow: bool = True) -> Doc | None:
    """The customer, following merge tombstones to the survivor unless ``follow`` is off."""
    doc = await store.customers.find_one({"_id": customer_id})
    hops = 0
    while follow and doc is not None and doc.get("merged_into") and hops < MAX_TOMBSTONE_HOPS:
        doc = await store.customers.find_one({"_id": doc["merged_into"]})
        hops += 1
    return doc


async def origins(store: Store, customer_ids: Sequence[str]) -> dict[str, str]:
    """Event that created each customer: lets replays re-emit customer.created identically."""
    docs = await find_in(store.customers, "_id", customer_ids, projection={"origin_event_id": 1})
    return {doc["_id"]: doc.get("origin_event_id", "") for doc in docs}


async def infos(store: Store, customer_ids: Sequence[str]) -> dict[str, CustomerInfo]:
    """What the resolver needs to know of each customer (age, identifiers, separations)."""
    ids = list(set(customer_ids))
    if not ids:
        return {}
    docs = await find_in(
        store.customers,
        "_id",
        ids,
        projection={
            "created_at": 1,
            "identifiers": 1,
            "separated_from": 1,
            "origin_event_id": 1,
            "pending": 1,
        },
    )
    out = {}
    for d in docs:
        out[d["_id"]] = CustomerInfo(
            d["_id"],
            d.get("created_at") or datetime.min.replace(tzinfo=UTC),
            tuple(d.get("identifiers", ())),
            frozenset(d.get("separated_from", ())),
            d.get("origin_event_id", ""),
            bool(d.get("pending")),
        )
    return out


async def search_by_name(store: Store, tokens: Sequence[str], limit: int = 20) -> list[Doc]:
    """Live customers whose name has every token (the last one as a prefix)."""
    if not tokens:
        return []
    *whole, last = tokens
    query: Doc = {"merged_into": None, "pending": {"$ne": True}}
    conds: list[Doc] = [{"name_tokens": t} for t in whole]
    conds.append({"name_tokens": {"$regex": "^" + re.escape(last)}})
    query["$and"] = conds
    cursor = store.customers.find(query).sort("created_at", 1).limit(limit)
    return [d async for d in cursor]
