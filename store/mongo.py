"""MongoDB connection, collections and indexes: the system of record.

Correctness without multi-document transactions rests on the unique indexes created here, so
every service calls :func:`ensure_indexes` at start (it is idempotent and cheap).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

log = logging.getLogger(__name__)

Doc = dict[str, Any]

SPLIT_MARKS_KEPT_S = 7 * 86400  # unmerge marks: Kafka's default retention (store/merges.py)
# an index of that name exists with other options (MongoDB: 85; SecantusDB: 86, which
# MongoDB answers when the keys differ too; the retune below changes only expiries)
INDEX_CONFLICTS = (85, 86)

INDEXES: dict[str, list[IndexModel]] = {
    # identities: _id = normalised identifier (unique by construction) → customer_id
    "identities": [IndexModel([("customer_id", ASCENDING)], name="by_customer")],
    "customers": [
        IndexModel([("name_tokens", ASCENDING)], name="by_name_token"),
    ],
    "interactions": [
        IndexModel(
            [("customer_id", ASCENDING), ("occurred_at", DESCENDING), ("_id", DESCENDING)],
            name="timeline",
        ),
        IndexModel([("conversation_id", ASCENDING), ("occurred_at", ASCENDING)], name="by_conv"),
    ],
    "conversations": [
        # at most one active conversation per customer thread
        IndexModel(
            [("customer_id", ASCENDING), ("channel", ASCENDING), ("thread", ASCENDING)],
            name="one_active_per_thread",
            unique=True,
            partialFilterExpression={"active": True},
        ),
        IndexModel([("customer_id", ASCENDING), ("opened_at", DESCENDING)], name="by_customer"),
        IndexModel(
            [
                ("active", ASCENDING),
                ("assignee", ASCENDING),
                ("offer_id", ASCENDING),
                ("priority", DESCENDING),
                ("opened_at", ASCENDING),
            ],
            name="waiting",
        ),
    ],
    "merges": [
        IndexModel([("survivor_id", ASCENDING), ("created_at", DESCENDING)], name="by_survivor"),
        IndexModel([("loser_id", ASCENDING), ("created_at", DESCENDING)], name="by_loser"),
        IndexModel([("state", ASCENDING)], name="by_state"),
        IndexModel([("trigger", ASCENDING)], name="by_trigger"),
    ],
    "merge_suggestions": [
        IndexModel([("customers", ASCENDING), ("state", ASCENDING)], name="by_customer"),
        IndexModel([("state", ASCENDING), ("created_at", DESCENDING)], name="by_state"),
    ],
    # when the SLA sweep next looks at a conversation (store/sla_timers.py)
    "sla_timers": [IndexModel([("at", ASCENDING)], name="by_at")],
    # claimed identifiers: typed by customers, never identities; _id = identifier|customer
    "claims": [IndexModel([("identifier", ASCENDING)], name="by_identifier")],
    "verifications": [
        IndexModel([("expires_at", ASCENDING)], name="expiry", expireAfterSeconds=86400),
    ],
    # an unmerge's marks on the customers it takes the loser's things from (store/merges.py):
    # a batch that stored a message before a crash reads them when it is replayed, however
    # long the worker was down, so they are kept as long as Kafka keeps a batch by default
    "unmerge_splits": [
        IndexModel([("customer_id", ASCENDING)], name="by_customer"),
        IndexModel([("at", ASCENDING)], name="expiry", expireAfterSeconds=SPLIT_MARKS_KEPT_S),
    ],
    "agents": [
        # login name; agents of the first cut had none (they had a token)
        IndexModel(
            [("email", ASCENDING)],
            name="by_email",
            unique=True,
            partialFilterExpression={"email": {"$type": "string"}},
        ),
        IndexModel([("status", ASCENDING), ("active", ASCENDING)], name="by_status"),
    ],
    "sessions": [
        # _id = sha256 of the session token
        IndexModel([("expires_at", ASCENDING)], name="expiry", expireAfterSeconds=0),
        IndexModel([("agent_id", ASCENDING)], name="by_agent"),
    ],
    "notes": [
        IndexModel([("conversation_id", ASCENDING), ("created_at", ASCENDING)], name="by_conv")
    ],
    # email channel: IMAP position per mailbox (_id = account|mailbox), Message-ID registry
    # (_id = account|message-id, tells apart different mails reusing one id), sent replies
    "imap_checkpoints": [IndexModel([("updated_at", ASCENDING)], name="by_updated")],
    "mail_ids": [IndexModel([("created_at", ASCENDING)], name="by_created")],
    "email_outbox": [IndexModel([("state", ASCENDING), ("at", ASCENDING)], name="by_state")],
    "offers": [
        IndexModel([("agent_id", ASCENDING), ("state", ASCENDING)], name="by_agent"),
        IndexModel([("state", ASCENDING), ("expires_at", ASCENDING)], name="expiry"),
    ],
}


@dataclass
class Store:
    """One client and the collections of omnihub's database."""

    client: AsyncMongoClient[Doc]
    db: AsyncDatabase[Doc]

    @property
    def identities(self) -> AsyncCollection[Doc]:
        return self.db["identities"]

    @property
    def customers(self) -> AsyncCollection[Doc]:
        return self.db["customers"]

    @property
    def interactions(self) -> AsyncCollection[Doc]:
        return self.db["interactions"]

    @property
    def conversations(self) -> AsyncCollection[Doc]:
        return self.db["conversations"]

    @property
    def merges(self) -> AsyncCollection[Doc]:
        return self.db["merges"]

    @property
    def suggestions(self) -> AsyncCollection[Doc]:
        return self.db["merge_suggestions"]

    @property
    def claims(self) -> AsyncCollection[Doc]:
        return self.db["claims"]

    @property
    def verifications(self) -> AsyncCollection[Doc]:
        return self.db["verifications"]

    @property
    def splits(self) -> AsyncCollection[Doc]:
        return self.db["unmerge_splits"]

    @property
    def agents(self) -> AsyncCollection[Doc]:
        return self.db["agents"]

    @property
    def offers(self) -> AsyncCollection[Doc]:
        return self.db["offers"]

    async def ping(self) -> None:
        await self.db.command("ping")

    async def close(self) -> None:
        await self.client.close()


DUPLICATE_KEY = 11000


async def insert_new(coll: AsyncCollection[Doc], docs: Sequence[Doc]) -> list[int]:
    """Insert ``docs`` (one unordered ``insert_many``); returns the positions of those a unique
    index refused because their key is taken, in order. Any other write error is raised.

    The create-unless-present step of the worker and the router: on SecantusDB an insert
    costs about half an upsert (measured: 450 µs against 800-870 µs a document, 20 a batch),
    and a unique index settles races between writers without a transaction.
    """
    if not docs:
        return []
    try:
        await coll.insert_many(list(docs), ordered=False)
    except BulkWriteError as exc:
        return taken_positions(exc)
    return []


def taken_positions(exc: BulkWriteError) -> list[int]:
    """The positions, in order, of the writes of an unordered bulk write that a unique index
    refused because their key is taken; ``exc`` itself if any write failed otherwise."""
    errors = exc.details.get("writeErrors", [])
    if any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise exc
    return sorted(e["index"] for e in errors)


async def guarded_update(
    coll: AsyncCollection[Doc],
    query: Doc,
    update: Doc,
    *,
    projection: Doc | None = None,
    fetch: bool = True,
) -> Doc | None:
    """Apply ``update`` to the document ``query`` matches; it after the update, or None if the
    guard did not match. ``query`` names the document's ``_id``.

    update_one + find_one by ``_id`` rather than find_one_and_update: the guard in the filter
    is what makes the change atomic, and SecantusDB's findAndModify scans the whole
    collection (measured: 4 ms of its CPU among 50 agents, 26 ms among 1,000; update_one
    2-3 ms at both). The document is read just after the update, so it may also show a later
    writer's change. ``fetch=False`` skips the read: ``{"_id": …}`` stands for the document.
    """
    res = await coll.update_one(query, update)
    if res.matched_count == 0:
        return None
    if not fetch:
        return {"_id": query["_id"]}
    return await coll.find_one({"_id": query["_id"]}, projection)


IN_CHUNK = 32
"""values per ``$in`` query issued by :func:`find_in`"""
IN_PARALLEL = 1
"""``$in`` chunks in flight at once. One: SecantusDB serves each connection on a thread and
its threads share one interpreter lock, so chunks sent together cost it more CPU than the
same chunks one after the other. Measured with 8 (bench/HISTORY.md, 2026-11-24 23:53): in 5
alternated pairs identity resolution was 0.353 of the store's limit on average against 0.337,
SecantusDB 71.5-73.9 % of a core against 74.5-75.9, and offers were as fast. On MongoDB,
which runs commands in parallel, more may pay."""
PROBE_CHUNK = 128
"""values per ``$in`` query of a *probe*: a read that expects to find few of its values (a
replay check, the merge log's losers, claims). A value that matches nothing costs little
beyond the query's fixed cost, so fewer, larger queries win. Measured on SecantusDB, 350
values none of which exist: 19-20 ms of its CPU in chunks of 32, 11-12 ms in chunks of 128,
9 ms in one query (through a secondary index with a second condition: 35-36, 16-17 and
9-10 ms). Not larger: a probe that finds all its values (a batch replayed after a crash) pays
the ``$in`` cost of :func:`find_in` on every chunk."""


async def find_in(
    coll: AsyncCollection[Doc],
    field: str,
    values: Iterable[Any],
    where: Doc | None = None,
    projection: Doc | None = None,
    *,
    chunk: int = IN_CHUNK,
) -> list[Doc]:
    """Documents whose ``field`` is one of ``values`` (and matching ``where``).

    The values go out in chunks of ``chunk``, :data:`IN_PARALLEL` queries at a time. On
    SecantusDB a large ``$in`` costs O(matches × values): every candidate the index finds is
    matched again against the whole list (measured: 500 ids by ``_id`` take 600 ms in one
    query, 60 ms in chunks of 32). On MongoDB the chunks cost a few more round trips.
    Values are de-duplicated and each document is returned once.

    ``field`` leads the filter, before ``where``: SecantusDB plans with the index of the
    first indexed field it meets, so ``{"state": …, "trigger": {"$in": …}}`` walks every
    merge in that state (measured: 2 s a query at 10,000 merges, growing with them) while
    the same filter led by ``trigger`` takes 5 ms at any size.
    """
    wanted = list(dict.fromkeys(values))
    if not wanted:
        return []
    parts = [wanted[i : i + chunk] for i in range(0, len(wanted), chunk)]
    gate = asyncio.Semaphore(IN_PARALLEL)

    async def one(part: list[Any]) -> list[Doc]:
        query: Doc = {field: {"$in": part}}
        query.update((k, v) for k, v in (where or {}).items() if k != field)
        async with gate:
            return [d async for d in coll.find(query, projection)]

    found = await asyncio.gather(*(one(p) for p in parts))
    if len(found) == 1:
        return found[0]
    seen: set[Any] = set()
    out: list[Doc] = []
    for docs in found:
        for d in docs:
            if d["_id"] not in seen:  # an array field can match through two chunks
                seen.add(d["_id"])
                out.append(d)
    return out


def connect(url: str, db: str, *, timeout_ms: int = 5000) -> Store:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        appname="omnihub",
    )
    return Store(client=client, db=client[db])


# Indexes earlier versions created and this one no longer wants. Every index is paid for on
# every write of its collection (SecantusDB rewrites them all on each update), so they go.
OBSOLETE_INDEXES: dict[str, tuple[str, ...]] = {
    # (state, opened_at): listings sort by last activity in memory anyway;
    # (customer_id, last_assigned_at): by_customer serves the few conversations of a customer
    # (assignee, state): an agent's list is {assignee, active}, which "waiting" serves
    "conversations": ("queue", "last_served", "by_assignee"),
    # web chat history reads the owner's timeline (store/interactions.of_sender): even a
    # partial index costs every interaction insert its metadata work on SecantusDB
    "interactions": ("webchat_by_sender",),
    # every customer has merged_into (null while live), so it indexed them all for no query:
    # tombstones are found by _id, search goes by name_tokens
    "customers": ("by_merged_into",),
    # no query reads offers by conversation (a conversation names its one pending offer)
    "offers": ("by_conv",),
}


async def ensure_indexes(store: Store) -> None:
    for name, models in INDEXES.items():
        try:
            await store.db[name].create_indexes(models)
        except OperationFailure as exc:
            if exc.code not in INDEX_CONFLICTS:
                raise
            # an earlier version gave an index another expiry: retune it in place
            await _retune_expiry(store, name, models)
            await store.db[name].create_indexes(models)
    for name, obsolete in OBSOLETE_INDEXES.items():
        existing = {ix["name"] async for ix in await store.db[name].list_indexes()}
        for index in set(obsolete) & existing:
            log.info("store.drop_obsolete_index collection=%s index=%s", name, index)
            await store.db[name].drop_index(index)


async def _retune_expiry(store: Store, name: str, models: Sequence[IndexModel]) -> None:
    """Set the expiry of this version on the TTL indexes of collection ``name``, in place
    (``collMod``: no window without the index, no rebuild)."""
    existing = {ix["name"]: ix async for ix in await store.db[name].list_indexes()}
    for model in models:
        spec = model.document
        current = existing.get(spec["name"], {}).get("expireAfterSeconds")
        wanted = spec.get("expireAfterSeconds")
        if wanted is None or current is None or current == wanted:
            continue
        log.info(
            "store.retune_expiry collection=%s index=%s from=%s to=%s",
            name,
            spec["name"],
            current,
            wanted,
        )
        await store.db.command(
            "collMod", name, index={"name": spec["name"], "expireAfterSeconds": wanted}
        )


async def wait_ready(store: Store, timeout: float) -> None:
    """Ping until the server answers or ``timeout`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await store.ping()
            return
        except PyMongoError:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)
