"""verifications: a code sent to a claimed address/number; typing it back proves ownership."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta

from store.mongo import Doc, Store, guarded_update

MAX_ATTEMPTS = 5


def _digest(verification_id: str, code: str) -> str:
    return hashlib.sha256(f"{verification_id}:{code}".encode()).hexdigest()


async def create(
    store: Store, customer_id: str, identifier: str, now: datetime, ttl: float
) -> tuple[Doc, str]:
    """A new pending verification and its code (the code is stored only hashed)."""
    vid = str(uuid.uuid4())
    code = f"{secrets.randbelow(10**6):06d}"
    doc = {
        "_id": vid,
        "customer_id": customer_id,
        "identifier": identifier,
        "code_hash": _digest(vid, code),
        "attempts": 0,
        "state": "pending",
        "created_at": now,
        "expires_at": now + timedelta(seconds=ttl),
    }
    await store.verifications.insert_one(doc)
    return doc, code


async def check(
    store: Store, verification_id: str, code: str, now: datetime
) -> tuple[str, Doc | None]:
    """Returns (outcome, doc): outcome is confirmed | wrong_code | expired | exhausted |
    not_found | already_confirmed."""
    doc = await guarded_update(
        store.verifications, {"_id": verification_id, "state": "pending"}, {"$inc": {"attempts": 1}}
    )
    if doc is None:
        other = await store.verifications.find_one({"_id": verification_id})
        if other is None:
            return "not_found", None
        return ("already_confirmed" if other["state"] == "confirmed" else other["state"]), other
    if doc["expires_at"] <= now:
        await store.verifications.update_one({"_id": doc["_id"]}, {"$set": {"state": "expired"}})
        return "expired", doc
    if doc["attempts"] > MAX_ATTEMPTS:
        await store.verifications.update_one({"_id": doc["_id"]}, {"$set": {"state": "exhausted"}})
        return "exhausted", doc
    if not hmac.compare_digest(doc["code_hash"], _digest(verification_id, code.strip())):
        return "wrong_code", doc
    confirmed = await guarded_update(
        store.verifications,
        {"_id": doc["_id"], "state": "pending"},
        {"$set": {"state": "confirmed", "confirmed_at": now}},
    )
    return ("confirmed", confirmed) if confirmed else ("already_confirmed", doc)
