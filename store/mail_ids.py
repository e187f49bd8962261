"""Message-ID registry: tells apart different mails that reuse one Message-ID.

Broken mailers and some list servers send different mails with the same Message-ID. The event
id is derived from the Message-ID, so the second mail would be silently deduplicated away. The
first mail seen with an id (per inbox) keeps it; a later mail with the same id but different
content (fingerprint) gets ``<id>#<fingerprint prefix>``. Re-deliveries of the *same* mail keep
matching the registered fingerprint, so retries stay idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.errors import BulkWriteError

from pipeline.contract import utcnow
from store.mongo import PROBE_CHUNK, Store, find_in

COLLECTION = "mail_ids"


async def resolve(store: Store, entries: Sequence[tuple[str, str, str]]) -> list[str]:
    """For each ``(account, message_id, fingerprint)`` the source_id to use."""
    keys = [f"{acc}|{mid}" for acc, mid, _ in entries]
    coll = store.db[COLLECTION]
    owner: dict[str, str] = {}
    for doc in await find_in(coll, "_id", keys, projection={"fp": 1}, chunk=PROBE_CHUNK):
        owner[doc["_id"]] = doc["fp"]
    new: dict[str, str] = {}
    for k, (_, _, fp) in zip(keys, entries, strict=True):
        if k not in owner and k not in new:
            new[k] = fp
    if new:
        now = utcnow()
        try:
            await coll.insert_many(
                [{"_id": k, "fp": fp, "created_at": now} for k, fp in new.items()], ordered=False
            )
            owner.update(new)
        except BulkWriteError:
            # another delivery registered some of them first: theirs wins, read it back
            for doc in await find_in(coll, "_id", new, projection={"fp": 1}):
                owner[doc["_id"]] = doc["fp"]
    out = []
    for k, (_, mid, fp) in zip(keys, entries, strict=True):
        out.append(mid if owner.get(k, fp) == fp else f"{mid}#{fp[:16]}"[:512])
    return out
