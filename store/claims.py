"""claims: identifiers a customer typed (pre-chat forms…). Never identities: a claim only
ever produces a suggestion, so nobody reaches another person's history by typing their email."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from pymongo import UpdateOne

from store.mongo import PROBE_CHUNK, Store, find_in


async def record_many(store: Store, items: Sequence[tuple[str, str, str]], now: datetime) -> None:
    """(identifier, customer_id, event_id) triples."""
    if not items:
        return
    ops = [
        UpdateOne(
            {"_id": f"{ident}|{customer}"},
            {
                "$setOnInsert": {"identifier": ident, "customer_id": customer, "created_at": now},
                "$addToSet": {"evidence": event},
            },
            upsert=True,
        )
        for ident, customer, event in items
    ]
    await store.claims.bulk_write(ops, ordered=False)


async def claimants(store: Store, identifiers: Iterable[str]) -> dict[str, list[str]]:
    ids = sorted(set(identifiers))
    if not ids:
        return {}
    out: dict[str, list[str]] = {}
    # a probe: few identifiers were ever claimed
    for doc in await find_in(store.claims, "identifier", ids, chunk=PROBE_CHUNK):
        out.setdefault(doc["identifier"], []).append(doc["customer_id"])
    return out
