"""customers: one document per person; a merged customer stays as a tombstone."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne

from store.mongo import Doc, Store, find_in, insert_new
from unify.resolver import CustomerInfo

MAX_TOMBSTONE_HOPS = 16
ORPHAN_SLACK = 5  # search reads a few more than asked for, in case some own nothing
SEARCH_CANDIDATES = 5000  # most customers one name search looks at


# A customer written by this version says whether a merge or a suggestion ever named it, so
# that reading its profile can skip those two collections when none did (3 of a lookup's 6
# reads). Each flag is set before the log entry or suggestion that names the customer; a
# customer written by an earlier version has neither flag, and its readers read both.
NOTHING_LOGGED: dict[str, bool] = {"in_merges": False, "in_suggestions": False}


def named_in(doc: Doc, collection: str) -> bool:
    """Whether ``collection`` (``merges`` or ``suggestions``) may name this customer."""
    return doc.get(f"in_{collection}", True) is not False


async def mark_named(store: Store, customer_ids: Iterable[str], collection: str) -> None:
    """Flag the customers a new ``merges`` entry or suggestion is about to name."""
    ids = sorted(set(customer_ids))
    flag = f"in_{collection}"
    if ids:
        await store.customers.update_many(
            {"_id": {"$in": ids}, flag: {"$ne": True}}, {"$set": {flag: True}}
        )


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
                **NOTHING_LOGGED,
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


async def create_shells(store: Store, items: Sequence[NewCustomer], now: datetime) -> set[str]:
    """Insert customers that do not exist yet, before their identities are linked; an id that
    exists already (a replay) is left as it is. One that loses its links to another writer owns
    nothing: search checks that a customer owns one of its identifiers.
    Returns the ids that existed already."""
    if not items:
        return set()
    docs = [
        {
            "_id": item.customer_id,
            "created_at": item.created_at,
            "origin_event_id": item.origin_event_id,
            "merged_into": None,
            **NOTHING_LOGGED,
            "identifiers": list(item.identifiers),
            "name_tokens": list(item.name_tokens),
            "updated_at": now,
            **({"display_name": item.display_name} if item.display_name else {}),
        }
        for item in items
    ]
    return {docs[i]["_id"] for i in await insert_new(store.customers, docs)}


async def get(store: Store, customer_id: str, *, follow: bool = True) -> Doc | None:
    """The customer, following merge tombstones to the survivor unless ``follow`` is off."""
    doc = await store.customers.find_one({"_id": customer_id})
    hops = 0
    while follow and doc is not None and doc.get("merged_into") and hops < MAX_TOMBSTONE_HOPS:
        doc = await store.customers.find_one({"_id": doc["merged_into"]})
        hops += 1
    return doc


async def get_many(store: Store, customer_ids: Iterable[str]) -> dict[str, Doc]:
    """:func:`get` for several customers, keyed by the ids asked for: one read, plus one
    :func:`get` for each that was merged meanwhile (its survivor stands in)."""
    found = {d["_id"]: d for d in await find_in(store.customers, "_id", customer_ids)}
    for cid, doc in list(found.items()):
        if doc.get("merged_into"):
            survivor = await get(store, cid)
            if survivor is None:
                del found[cid]
            else:
                found[cid] = survivor
    return found


async def origins(store: Store, customer_ids: Sequence[str]) -> dict[str, str]:
    """Event that created each customer: lets replays re-emit customer.created identically."""
    docs = await find_in(store.customers, "_id", customer_ids, projection={"origin_event_id": 1})
    return {doc["_id"]: doc.get("origin_event_id", "") for doc in docs}


async def infos(
    store: Store, customer_ids: Sequence[str], *, tombstones: dict[str, str] | None = None
) -> dict[str, CustomerInfo]:
    """What the resolver needs to know of each customer (age, identifiers, separations).

    With ``tombstones``, merged customers are left out and put there (id → merged_into), so
    one read serves callers that would otherwise look for tombstones first."""
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
            "merged_into": 1,
            "segment": 1,
        },
    )
    out = {}
    for d in docs:
        if tombstones is not None and d.get("merged_into"):
            tombstones[d["_id"]] = d["merged_into"]
            continue
        out[d["_id"]] = CustomerInfo(
            d["_id"],
            d.get("created_at") or datetime.min.replace(tzinfo=UTC),
            tuple(d.get("identifiers", ())),
            frozenset(d.get("separated_from", ())),
            d.get("origin_event_id", ""),
            bool(d.get("pending")),
            d.get("segment"),
        )
    return out


async def search_by_name(store: Store, tokens: Sequence[str], limit: int = 20) -> list[Doc]:
    """Live customers whose name has every token (the last one as a prefix), oldest first.

    The store is asked for one token only (the longest whole one, else the prefix as a
    range): SecantusDB uses the name index only for a filter on that field alone, and never for
    ``$regex``. The rest is checked here, on at most ``SEARCH_CANDIDATES`` customers.
    Only customers that own one of their identifiers count: a customer written for an
    identity link that a crash interrupted and another writer then won owns nothing."""
    if not tokens:
        return []
    *whole, last = tokens
    if whole:
        driving: Any = max(whole, key=len)
    else:
        driving = {"$gte": last, "$lt": last + "\U0010ffff"}
    cursor = store.customers.find({"name_tokens": driving}).limit(SEARCH_CANDIDATES)
    found = [
        d
        async for d in cursor
        if not d.get("merged_into")
        and not d.get("pending")
        and set(whole) <= set(d.get("name_tokens", ()))
        and any(t.startswith(last) for t in d.get("name_tokens", ()))
    ]
    epoch = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda d: (d.get("created_at") or epoch, d["_id"]))
    found = found[: limit + ORPHAN_SLACK]
    idents = {i for d in found for i in d.get("identifiers", ())}
    owners = {
        d["_id"]: d["customer_id"]
        for d in await find_in(store.identities, "_id", idents, projection={"customer_id": 1})
    }
    return [d for d in found if any(owners.get(i) == d["_id"] for i in d.get("identifiers", ()))][
        :limit
    ]
