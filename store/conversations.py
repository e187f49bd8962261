"""conversations: a customer's interactions on one channel thread, open → resolved.

At most one conversation per (customer, channel, thread) is ``active``: a partial unique index
guards it, so concurrent workers converge on the same conversation without transactions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING, UpdateOne

from store.mongo import Doc, Store, find_in, guarded_update, insert_new

Key = tuple[str, str, str]  # customer_id, channel, thread


def key_of(doc: Doc) -> Key:
    return (doc["customer_id"], doc["channel"], doc["thread"])


async def by_customers(store: Store, customer_ids: Iterable[str]) -> list[Doc]:
    """Every conversation of these customers, in one indexed read.

    Only ``customer_id`` goes in the filter, the rest is for the caller to pick: with a second
    field (``active``, ``state``) SecantusDB plans a collection scan instead of the index.
    """
    return await find_in(store.conversations, "customer_id", sorted(set(customer_ids)))


def active_among(docs: Iterable[Doc], keys: Iterable[Key]) -> dict[Key, Doc]:
    """The active conversation of each key, from :func:`by_customers`' documents."""
    wanted = set(keys)
    return {key_of(d): d for d in docs if d.get("active") and key_of(d) in wanted}


def resolved_among(docs: Iterable[Doc], keys: Iterable[Key], since: datetime) -> dict[Key, Doc]:
    """The most recently resolved conversation of each key, if resolved after ``since``."""
    wanted = set(keys)
    out: dict[Key, Doc] = {}
    for d in docs:
        at = d.get("resolved_at")
        if d.get("state") != "resolved" or at is None or at < since or key_of(d) not in wanted:
            continue
        best = out.get(key_of(d))
        if best is None or at > best["resolved_at"]:
            out[key_of(d)] = d
    return out


async def active_for(store: Store, keys: Sequence[Key]) -> dict[Key, Doc]:
    if not keys:
        return {}
    return active_among(await by_customers(store, (k[0] for k in keys)), keys)


async def open_many(store: Store, proposals: Sequence[Doc]) -> dict[Key, Doc]:
    """Open a conversation for each proposal unless its thread already has an active one.

    Proposals carry ``active: True`` and a deterministic ``_id``; the partial unique index
    (one active conversation per thread) turns a concurrent opener's insert into a
    duplicate-key error, and a replay's insert hits its own ``_id``. Returns the active
    conversation of every proposed key (possibly another writer's).
    """
    if not proposals:
        return {}
    docs = [{**p, "active": True} for p in proposals]
    failed = set(await insert_new(store.conversations, docs))
    out = {key_of(d): d for i, d in enumerate(docs) if i not in failed}
    if not failed:
        return out
    # someone else's (or our own earlier) conversation holds these threads: read it back
    out.update(await active_for(store, [key_of(docs[i]) for i in failed]))
    return out


ACTIVITY = "conversation_activity"
"""Last-message time of conversations that got messages after the one that opened them.

A message on an open conversation is the most common write after the interaction itself;
kept beside the conversation in a collection with no secondary index, it costs a third of an
update of the conversation document, whose every index SecantusDB rewrites on each update.
Readers see ``last_message_at`` merged back (:func:`with_activity`)."""


async def touch_many(store: Store, last_at: dict[str, datetime]) -> None:
    """Move each conversation's last message time forward (``$max``: replays change nothing)."""
    if not last_at:
        return
    ops = [
        UpdateOne({"_id": cid}, {"$max": {"at": at}}, upsert=True) for cid, at in last_at.items()
    ]
    await store.db[ACTIVITY].bulk_write(ops, ordered=False)


async def with_activity(store: Store, docs: Sequence[Doc]) -> list[Doc]:
    """``docs`` with ``last_message_at`` brought up to their latest message (in place)."""
    if docs:
        found = await find_in(store.db[ACTIVITY], "_id", [d["_id"] for d in docs])
        latest = {a["_id"]: a["at"] for a in found}
        for doc in docs:
            at = latest.get(doc["_id"])
            if at is not None and (
                doc.get("last_message_at") is None or at > doc["last_message_at"]
            ):
                doc["last_message_at"] = at
    return list(docs)


async def _guarded(store: Store, query: Doc, update: Doc, *, fetch: bool = True) -> Doc | None:
    """Apply ``update`` if ``query`` (the guard) matches; the document after, or None (see
    :func:`store.mongo.guarded_update`)."""
    return await guarded_update(store.conversations, query, update, fetch=fetch)


async def get(store: Store, conversation_id: str) -> Doc | None:
    return await store.conversations.find_one({"_id": conversation_id})


async def get_many(store: Store, ids: Sequence[str]) -> dict[str, Doc]:
    return {d["_id"]: d for d in await find_in(store.conversations, "_id", ids)}


async def of_customer(store: Store, customer_ids: Sequence[str], limit: int = 20) -> list[Doc]:
    cursor = (
        store.conversations.find({"customer_id": {"$in": list(customer_ids)}})
        .sort("opened_at", -1)
        .limit(limit)
    )
    return [d async for d in cursor]


async def last_served(
    store: Store, customer_ids: Sequence[str], since: datetime
) -> tuple[str, datetime] | None:
    """The agent who last took a conversation of this customer after ``since``, and when."""
    doc = await store.conversations.find_one(
        {"customer_id": {"$in": list(customer_ids)}, "last_assigned_at": {"$gte": since}},
        {"last_agent": 1, "last_assigned_at": 1},
        sort=[("last_assigned_at", DESCENDING)],
    )
    if doc is None or not doc.get("last_agent"):
        return None
    return doc["last_agent"], doc["last_assigned_at"]


async def last_served_many(
    store: Store, customer_ids: Sequence[str], since: datetime
) -> dict[str, tuple[str, datetime]]:
    """:func:`last_served` for many customers in one query."""
    if not customer_ids:
        return {}
    docs = await find_in(
        store.conversations,
        "customer_id",
        customer_ids,
        {"last_assigned_at": {"$gte": since}},
        {"customer_id": 1, "last_agent": 1, "last_assigned_at": 1},
    )
    out: dict[str, tuple[str, datetime]] = {}
    for d in docs:
        best = out.get(d["customer_id"])
        if d.get("last_agent") and (best is None or d["last_assigned_at"] > best[1]):
            out[d["customer_id"]] = (d["last_agent"], d["last_assigned_at"])
    return out


async def classify_many(store: Store, fields: dict[str, Doc]) -> bool:
    """Store the routing classification of many conversations once, in one write (the first
    router to classify one wins); False if another router had classified one of them first
    (the caller reads them back)."""
    if not fields:
        return True
    ops = [UpdateOne({"_id": cid, "classified_at": None}, {"$set": f}) for cid, f in fields.items()]
    res = await store.conversations.bulk_write(ops, ordered=False)
    return res.matched_count == len(ops)


async def claim_for_offer(
    store: Store, conversation_id: str, offer_id: str, agent_id: str | None = None
) -> Doc | None:
    """Reserve an unassigned conversation for one offer; None if it is taken or offered."""
    return await _guarded(
        store,
        {"_id": conversation_id, "assignee": None, "offer_id": None, "active": True},
        {"$set": {"offer_id": offer_id, "offer_agent": agent_id}},
        fetch=False,
    )


async def claim_many(store: Store, claims: Sequence[tuple[str, str, str]]) -> set[str]:
    """Claim several conversations, each for its (conversation, offer, agent) under the guard
    of :func:`claim_for_offer`, all at once; returns the conversations this call won."""
    won = await asyncio.gather(
        *(claim_for_offer(store, conv_id, offer_id, agent_id)
          for conv_id, offer_id, agent_id in claims)
    )
    return {conv_id for (conv_id, _, _), ok in zip(claims, won, strict=True) if ok is not None}


async def release_offer(
    store: Store,
    conversation_id: str,
    offer_id: str,
    passed: str | None = None,
    *,
    fetch: bool = False,
) -> Doc | None:
    """Take an offer off the conversation; ``passed`` remembers the agent who let it go."""
    update: Doc = {"$set": {"offer_id": None, "offer_agent": None}}
    if passed is not None:
        update["$addToSet"] = {"passed": passed}
    return await _guarded(
        store,
        {"_id": conversation_id, "offer_id": offer_id},
        update,
        fetch=fetch,
    )


async def assign(
    store: Store, conversation_id: str, offer_id: str, agent_id: str, now: datetime
) -> Doc | None:
    """Assign only if the conversation is still reserved for this offer and unassigned."""
    update: dict[str, Any] = {
        "$set": {
            "assignee": agent_id,
            "state": "assigned",
            "assigned_at": now,
            "offer_id": None,
            "offer_agent": None,
            "last_agent": agent_id,
            "last_assigned_at": now,
        }
    }
    return await _guarded(
        store,
        {"_id": conversation_id, "offer_id": offer_id, "assignee": None, "active": True},
        update,
    )


async def unassign(
    store: Store, conv: Doc, fields: Doc, *, passed: str | None = None
) -> Doc | None:
    """Take the conversation from whoever holds it as seen in ``conv`` (assignee or offer);
    None if that changed meanwhile. ``fields`` are set too (team, offer of a transfer…)."""
    update: Doc = {
        "$set": {"assignee": None, "offer_id": None, "offer_agent": None, "state": "open", **fields}
    }
    if passed is not None:
        update["$addToSet"] = {"passed": passed}
    return await _guarded(
        store,
        {
            "_id": conv["_id"],
            "active": True,
            "assignee": conv.get("assignee"),
            "offer_id": conv.get("offer_id"),
        },
        update,
    )


async def resolve(store: Store, conv: Doc, agent_id: str | None, now: datetime) -> Doc | None:
    """Close an active conversation as seen in ``conv``; None if it changed meanwhile."""
    fields: Doc = {
        "active": False,
        "state": "resolved",
        "resolved_at": now,
        "resolved_by": agent_id,
        # who had it stays in last_agent: a resolved conversation is nobody's work now, and
        # reopening it (by hand or by a new message) starts unassigned
        "assignee": None,
        "offer_id": None,
        "offer_agent": None,
    }
    done = await _guarded(
        store,
        {
            "_id": conv["_id"],
            "active": True,
            "assignee": conv.get("assignee"),
            "offer_id": conv.get("offer_id"),
        },
        {"$set": fields},
        fetch=False,
    )
    return None if done is None else {**conv, **fields}


async def reopen(store: Store, conversation_id: str, by: str | None, now: datetime) -> Doc | None:
    """Make a resolved conversation active again, unassigned and waiting; raises
    DuplicateKeyError when its thread already has another active conversation."""
    return await _guarded(
        store,
        {"_id": conversation_id, "active": False},
        {
            "$set": {
                "active": True,
                "state": "open",
                "assignee": None,
                "offer_id": None,
                "offer_agent": None,
                "passed": [],
                "reopened_at": now,
                "reopened_by": by,
                "resolved_at": None,
                "classified_at": None,  # classified again: SLA clocks restart
                "first_response_at": None,
                "sla_marks": [],
            },
        },
    )


async def unclassify(store: Store, conversation_id: str, before: datetime) -> None:
    """Forget a classification made before ``before`` (a reopened conversation is judged on
    its new message, and its SLA clocks restart)."""
    await store.conversations.update_one(
        {"_id": conversation_id, "classified_at": {"$lt": before}},
        {"$set": {"classified_at": None, "first_response_at": None, "sla_marks": []}},
    )


async def stamp_first_response(store: Store, conversation_id: str, now: datetime) -> bool:
    res = await store.conversations.update_one(
        {"_id": conversation_id, "first_response_at": None}, {"$set": {"first_response_at": now}}
    )
    return res.modified_count == 1


async def raise_for_sla(store: Store, conversation_id: str, mark: str, by: int) -> Doc | None:
    """Raise priority once per SLA mark (``first_response:warning``…); None if already done."""
    return await _guarded(
        store,
        {"_id": conversation_id, "active": True, "sla_marks": {"$ne": mark}},
        {"$addToSet": {"sla_marks": mark}, "$inc": {"priority": by}},
    )


async def waiting(store: Store, limit: int = 100, teams: Sequence[str] | None = None) -> list[Doc]:
    """Open, unassigned, unoffered conversations, highest priority then oldest first."""
    query: Doc = {"active": True, "assignee": None, "offer_id": None}
    if teams is not None:
        query["team"] = {"$in": list(teams)}
    cursor = (
        store.conversations.find(query)
        .sort([("priority", DESCENDING), ("opened_at", 1)])
        .limit(limit)
    )
    return [d async for d in cursor]


async def listing(store: Store, query: Doc, limit: int = 50) -> list[Doc]:
    """Conversations matching ``query``, latest message first."""
    heads = [
        d async for d in store.conversations.find(query, {"last_message_at": 1, "opened_at": 1})
    ]
    await with_activity(store, heads)
    epoch = datetime.min.replace(tzinfo=UTC)
    heads.sort(key=lambda d: d.get("last_message_at") or d.get("opened_at") or epoch, reverse=True)
    top = {d["_id"]: d.get("last_message_at") for d in heads[:limit]}
    docs = {d["_id"]: d for d in await find_in(store.conversations, "_id", list(top))}
    out = [docs[i] for i in top if i in docs]
    for doc in out:  # the time merged above: the document's own is never later
        doc["last_message_at"] = top[doc["_id"]]
    return out


async def held_by(store: Store, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Of (agent_id, conversation_id) pairs, those where the agent really holds it (assigned
    and active, or reserved for its offer)."""
    if not pairs:
        return set()
    found = await find_in(
        store.conversations,
        "_id",
        {c for _, c in pairs},
        projection={"assignee": 1, "offer_agent": 1, "active": 1},
    )
    docs = {d["_id"]: d for d in found}
    out = set()
    for agent_id, conv_id in pairs:
        d = docs.get(conv_id)
        if d and d.get("active") and agent_id in (d.get("assignee"), d.get("offer_agent")):
            out.add((agent_id, conv_id))
    return out
