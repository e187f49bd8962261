"""merge_suggestions: links the resolver would not make on its own, for an agent to decide."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import UpdateOne

from pipeline.contract import deterministic_id
from store import customers
from store.mongo import Doc, Store, guarded_update


def suggestion_id(kind: str, customers: Sequence[str], identifier: str) -> str:
    return deterministic_id("suggestion", kind, *sorted(customers), identifier)


async def record_many(store: Store, items: Sequence[Doc], now: datetime) -> None:
    """Upsert open suggestions; one already decided stays decided (an agent said no)."""
    if not items:
        return
    ops = []
    for s in items:
        sid = suggestion_id(s["kind"], s["customers"], s["identifier"])
        ops.append(
            UpdateOne(
                {"_id": sid},
                {
                    "$setOnInsert": {
                        "kind": s["kind"],
                        "customers": sorted(s["customers"]),
                        "identifier": s["identifier"],
                        "reason": s["reason"],
                        "state": "open",
                        "created_at": now,
                    },
                    "$addToSet": {"evidence": s["event_id"]},
                },
                upsert=True,
            )
        )
    await customers.mark_named(store, {c for s in items for c in s["customers"]}, "suggestions")
    await store.suggestions.bulk_write(ops, ordered=False)


async def for_customer(store: Store, customer_ids: Sequence[str], state: str = "open") -> list[Doc]:
    cursor = (
        store.suggestions.find({"customers": {"$in": list(customer_ids)}, "state": state})
        .sort("created_at", -1)
        .limit(100)
    )
    return [d async for d in cursor]


async def list_by_state(store: Store, state: str, limit: int = 100) -> list[Doc]:
    cursor = store.suggestions.find({"state": state}).sort("created_at", -1).limit(limit)
    return [d async for d in cursor]


async def get(store: Store, suggestion_id_: str) -> Doc | None:
    return await store.suggestions.find_one({"_id": suggestion_id_})


async def decide(
    store: Store, suggestion_id_: str, state: str, by: str | None, now: datetime
) -> Doc | None:
    """open → confirmed/rejected; None if it was decided already."""
    update: dict[str, Any] = {"$set": {"state": state, "decided_by": by, "decided_at": now}}
    return await guarded_update(store.suggestions, {"_id": suggestion_id_, "state": "open"}, update)
