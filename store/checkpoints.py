"""IMAP positions: per ``account|mailbox`` the UIDVALIDITY and the last UID handed to Kafka.

Advanced only after Kafka acknowledged the messages up to that UID, and never backwards: the
update's filter only matches an older position, so a slow or replayed writer cannot undo a
newer one. A new UIDVALIDITY replaces the position (the server renumbered the mailbox).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pymongo.errors import DuplicateKeyError

from pipeline.contract import utcnow
from store.mongo import Store

COLLECTION = "imap_checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    account: str
    mailbox: str
    uidvalidity: int
    last_uid: int
    created_at: datetime
    updated_at: datetime


def key(account: str, mailbox: str) -> str:
    return f"{account.lower()}|{mailbox}"


async def get(store: Store, account: str, mailbox: str) -> Checkpoint | None:
    doc = await store.db[COLLECTION].find_one({"_id": key(account, mailbox)})
    if doc is None:
        return None
    return Checkpoint(
        account=doc["account"],
        mailbox=doc["mailbox"],
        uidvalidity=int(doc["uidvalidity"]),
        last_uid=int(doc["last_uid"]),
        created_at=doc.get("created_at") or doc["updated_at"],
        updated_at=doc["updated_at"],
    )


async def advance(
    store: Store, account: str, mailbox: str, uidvalidity: int, last_uid: int
) -> bool:
    """Move the position forward to ``last_uid``; False when it already was there or beyond."""
    now = utcnow()
    coll = store.db[COLLECTION]
    _id = key(account, mailbox)
    res = await coll.update_one(
        {"_id": _id, "uidvalidity": uidvalidity, "last_uid": {"$lt": last_uid}},
        {"$set": {"last_uid": last_uid, "updated_at": now}},
    )
    if res.modified_count:
        return True
    try:
        await coll.insert_one(
            {
                "_id": _id,
                "account": account.lower(),
                "mailbox": mailbox,
                "uidvalidity": uidvalidity,
                "last_uid": last_uid,
                "created_at": now,
                "updated_at": now,
            }
        )
        return True
    except DuplicateKeyError:
        return False


async def reset(store: Store, account: str, mailbox: str, uidvalidity: int, last_uid: int) -> None:
    """Start over under a new UIDVALIDITY (keeps created_at: what we were responsible for)."""
    now = utcnow()
    await store.db[COLLECTION].update_one(
        {"_id": key(account, mailbox)},
        {
            "$set": {"uidvalidity": uidvalidity, "last_uid": last_uid, "updated_at": now},
            "$setOnInsert": {
                "account": account.lower(),
                "mailbox": mailbox,
                "created_at": now,
            },
        },
        upsert=True,
    )
