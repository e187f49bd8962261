"""Sent email replies, so a reply is never mailed twice to a customer.

The outbound consumer commits its Kafka offset after the relay accepted a reply and the
timeline copy was published; a crash in between replays the reply. The outbox records the
relay's acceptance first, so the replay publishes again but does not send again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.contract import utcnow
from store.mongo import Store

COLLECTION = "email_outbox"


async def sent(store: Store, reply_id: str) -> dict[str, Any] | None:
    return await store.db[COLLECTION].find_one({"_id": reply_id, "state": "sent"})


async def mark_sent(
    store: Store, reply_id: str, message_id: str, at: datetime | None = None
) -> None:
    await store.db[COLLECTION].update_one(
        {"_id": reply_id},
        {"$set": {"state": "sent", "message_id": message_id, "at": at or utcnow()}},
        upsert=True,
    )


async def mark_failed(store: Store, reply_id: str, error: str) -> None:
    await store.db[COLLECTION].update_one(
        {"_id": reply_id, "state": {"$ne": "sent"}},
        {"$set": {"state": "failed", "error": error[:2000], "at": utcnow()}},
        upsert=True,
    )
