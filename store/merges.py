"""Merging and unmerging customers without multi-document transactions.

A merge is a log entry plus idempotent steps, in an order that a crash at any point can
resume (:func:`resume_pending`) and that concurrent writers cannot slip past:

1. the log entry (``pending``) with a snapshot of what the loser owns — the basis of unmerge
   (first both customers are flagged ``in_merges``, so profile reads know to read the log);
2. the loser becomes a tombstone (``merged_into``) *before* anything moves, so a writer that
   linked something to the loser a moment ago sees the tombstone when it checks and settles it;
3. identities, interactions and conversations of the loser are re-pointed to the survivor;
4. the survivor gains the loser's identifiers (less those an unmerge running meanwhile took
   back);
5. if another merge made the survivor a tombstone meanwhile (after step 2, its own re-point
   before ours), what steps 3-4 moved onto it moves on to the live root (:func:`settle`); the
   log entry becomes ``done``.

Unmerge reverses it from the log: identities of the snapshot go back, the loser lives again,
and every interaction of the survivor sent from one of those identifiers goes with them. An
unmerge is refused once the survivor was merged again; a merge of the survivor that starts
while the unmerge runs is followed: what it moved of the loser's comes back from its survivor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError

from pipeline.contract import deterministic_id
from store import customers
from store.mongo import (
    PROBE_CHUNK,
    Doc,
    Store,
    find_in,
    guarded_update,
    insert_new,
    taken_positions,
)

log = logging.getLogger("omnihub.merges")

MAX_HOPS = 32
# a writer's batch reads identities and stores its messages within seconds: an unmerge that
# marked a customer longer ago than this cannot have raced with it (see split_marks)
RECENT_SPLITS = timedelta(hours=1)


class MergeError(Exception):
    """A merge or unmerge that cannot be done as asked; ``status`` suits HTTP."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def root(store: Store, customer_id: str) -> str:
    """The live customer a (possibly tombstoned) customer id stands for."""
    seen = 0
    current = customer_id
    while seen < MAX_HOPS:
        doc = await store.customers.find_one({"_id": current}, {"merged_into": 1})
        if doc is None or not doc.get("merged_into"):
            return current
        current = doc["merged_into"]
        seen += 1
    raise MergeError(500, f"merge chain from {customer_id} is longer than {MAX_HOPS}")


async def roots(store: Store, customer_ids: Sequence[str]) -> dict[str, str]:
    """Live root of each id, with one query per chain level instead of one per id.

    Only customers the merge log names as a loser can be tombstones: a merge writes its log
    entry before the tombstone (:func:`merge`, then :func:`_run`) and log entries are never
    deleted, so whoever sees a tombstone would have seen its entry. Most customers were never
    merged; asking the log first is a probe whose misses cost little (SecantusDB: 26-34 ms of
    its CPU for 340 customers of whom 17 merged, against 71-76 ms to read the customers),
    and only the customers it names are followed to their roots.
    """
    out = {cid: cid for cid in customer_ids}
    named = await find_in(
        store.merges, "loser_id", out, projection={"loser_id": 1}, chunk=PROBE_CHUNK
    )
    pending = {d["loser_id"] for d in named}
    for _ in range(MAX_HOPS):
        if not pending:
            break
        nxt: set[str] = set()
        targets = {out[c] for c in pending}
        docs = await find_in(
            store.customers, "_id", targets, {"merged_into": {"$ne": None}}, {"merged_into": 1}
        )
        moved = {d["_id"]: d["merged_into"] for d in docs}
        for c in pending:
            if out[c] in moved:
                out[c] = moved[out[c]]
                nxt.add(c)
        pending = nxt
    return out


@dataclass(frozen=True)
class Request:
    """A merge to make: ``loser`` into ``survivor`` (swapped if the loser is the older)."""

    merge_id: str
    survivor: str
    loser: str
    reason: str
    identifier: str | None = None
    trigger: str | None = None


async def merge(
    store: Store,
    merge_id: str,
    survivor: str,
    loser: str,
    *,
    reason: str,
    identifier: str | None,
    trigger: str | None,
    now: datetime,
) -> Doc | None:
    """Merge ``loser`` into ``survivor``; resumes a pending merge of the same id.

    Returns the finished log entry, or None when there was nothing to do (the loser is already
    part of the survivor, or the two are the same).
    """
    request = Request(merge_id, survivor, loser, reason, identifier, trigger)
    return (await merge_many(store, [request], now))[0]


async def merge_many(store: Store, requests: Sequence[Request], now: datetime) -> list[Doc | None]:
    """:func:`merge` of each request, in order; each step is sent once for many merges.

    The merges go in rounds whose merges share no customer, after following earlier merges
    to the live roots: within a round they cannot meet, so each takes its steps in the order
    above while the round sends each step as one command for all of them (a batch's merges
    cost one round trip a step instead of one a step and merge: ~17 of them, each paying
    SecantusDB's fixed cost of a command). A merge that meets another in the round's customers
    waits for the next round, where it merges the roots the earlier one left. The rare paths
    (a concurrent merge took the loser first) go one merge at a time.
    """
    out: dict[int, Doc | None] = {}
    todo = list(range(len(requests)))
    while todo:
        ids = {c for i in todo for c in (requests[i].survivor, requests[i].loser)}
        live = await roots(store, list(ids))
        taken: set[str] = set()
        now_round: list[tuple[int, str, str]] = []
        later: list[int] = []
        for i in todo:
            a, b = live[requests[i].survivor], live[requests[i].loser]
            if a == b:
                out[i] = None
            elif a in taken or b in taken:
                later.append(i)
            else:
                taken |= {a, b}
                now_round.append((i, a, b))
        if now_round:
            out.update(await _merge_round(store, requests, now_round, now))
        todo = later
    return [out[i] for i in range(len(requests))]


async def _merge_round(
    store: Store, requests: Sequence[Request], pairs: list[tuple[int, str, str]], now: datetime
) -> dict[int, Doc | None]:
    """The merges of one round: ``pairs`` are (request index, root, root), no root twice."""
    # the oldest customer survives: every tombstone points from a younger to an older one,
    # a total order, so concurrent merges can never make a cycle
    ids = [c for _, a, b in pairs for c in (a, b)]
    created = {
        d["_id"]: d.get("created_at")
        for d in await find_in(store.customers, "_id", ids, projection={"created_at": 1})
    }
    if missing := [c for c in ids if c not in created]:
        # a customer is written before anything points at it; missing means a writer is
        # mid-way: let the caller retry rather than guess an order
        raise ConnectionFailure(f"customer {missing[0]} not written yet")
    order: dict[int, tuple[str, str]] = {}
    for i, a, b in pairs:
        survivor, loser = sorted((a, b), key=lambda x: (created[x], x))
        order[i] = (survivor, loser)
    merge_ids = {i: requests[i].merge_id for i in order}
    entries = {d["_id"]: d for d in await find_in(store.merges, "_id", merge_ids.values())}
    fresh = [i for i in order if merge_ids[i] not in entries]
    if fresh:
        losers = [order[i][1] for i in fresh]
        owned: dict[str, dict[str, list[str]]] = {
            x: {"identities": [], "conversations": []} for x in losers
        }
        for kind, coll in (
            ("identities", store.identities),
            ("conversations", store.conversations),
        ):
            for d in await find_in(coll, "customer_id", losers, projection={"customer_id": 1}):
                owned[d["customer_id"]][kind].append(d["_id"])
        docs = [
            {
                "_id": merge_ids[i],
                "survivor_id": order[i][0],
                "loser_id": order[i][1],
                "reason": requests[i].reason,
                "identifier": requests[i].identifier,
                "trigger": requests[i].trigger,
                "state": "pending",
                "snapshot": owned[order[i][1]],
                "created_at": now,
            }
            for i in fresh
        ]
        await customers.mark_named(store, [order[i][n] for i in fresh for n in (0, 1)], "merges")
        raced = set(await insert_new(store.merges, docs))  # another writer logged it first
        entries.update((d["_id"], d) for n, d in enumerate(docs) if n not in raced)
        if raced:
            entries.update(
                (d["_id"], d)
                for d in await find_in(store.merges, "_id", [docs[n]["_id"] for n in raced])
            )
    pending = [entries[m] for m in merge_ids.values() if entries[m]["state"] == "pending"]
    if pending:
        await _run_many(store, pending, now)
        entries.update(
            (d["_id"], d) for d in await find_in(store.merges, "_id", [e["_id"] for e in pending])
        )
    result: dict[int, Doc | None] = {}
    for i, merge_id in merge_ids.items():
        # a merge overtaken by a concurrent one continues as a follow-up merge of the roots
        entry: Doc | None = entries[merge_id]
        hops = 0
        while entry is not None and entry.get("state") == "superseded" and hops < MAX_HOPS:
            follow = entry.get("superseded_by")
            entry = await store.merges.find_one({"_id": follow}) if follow else None
            hops += 1
        result[i] = entry
    return result


async def _run_many(store: Store, entries: Sequence[Doc], now: datetime) -> None:
    """Steps 2-5 of pending merges that share no customer, each step once for all."""
    # 2. tombstones first: late writers check for them and settle what they wrote
    await store.customers.bulk_write(
        [
            UpdateOne(
                {"_id": e["loser_id"], "merged_into": None},
                {"$set": {"merged_into": e["survivor_id"], "merged_at": now, "merge_id": e["_id"]}},
            )
            for e in entries
        ],
        ordered=False,
    )
    losers = [e["loser_id"] for e in entries]
    current = {
        d["_id"]: d.get("merged_into")
        for d in await find_in(store.customers, "_id", losers, projection={"merged_into": 1})
    }
    ours: list[Doc] = []
    for entry in entries:
        loser = entry["loser_id"]
        if loser in current and current[loser] != entry["survivor_id"]:
            await _supersede(store, entry, now)
        else:
            ours.append(entry)
    if not ours:
        return
    # 3. re-point everything the losers own
    await repoint_many(
        store,
        {e["loser_id"]: e["survivor_id"] for e in ours},
        {e["loser_id"]: e["_id"] for e in ours},
    )
    # 4. the survivors carry the losers' identifiers
    docs = {
        d["_id"]: d
        for d in await find_in(
            store.customers,
            "_id",
            [e["loser_id"] for e in ours],
            projection={"identifiers": 1, "name_tokens": 1},
        )
    }
    await store.customers.bulk_write(
        [
            UpdateOne(
                {"_id": e["survivor_id"]},
                {
                    "$addToSet": {
                        "identifiers": {
                            "$each": docs.get(e["loser_id"], {}).get("identifiers", [])
                        },
                        "name_tokens": {
                            "$each": docs.get(e["loser_id"], {}).get("name_tokens", [])
                        },
                        "merged_from": e["loser_id"],
                    },
                    "$set": {"updated_at": now},
                },
            )
            for e in ours
        ],
        ordered=False,
    )
    await _drop_taken_back(
        store, {e["survivor_id"]: docs.get(e["loser_id"], {}).get("identifiers", []) for e in ours}
    )
    # 5. a survivor another merge made a tombstone after our step 2 (its re-point done before
    # ours) holds what step 3 just moved onto it: on to its live root (before the log says
    # done, so a crash here resumes it)
    await settle(store, [e["survivor_id"] for e in ours])
    await store.merges.bulk_write(
        [
            UpdateOne(
                {"_id": e["_id"], "state": "pending"}, {"$set": {"state": "done", "done_at": now}}
            )
            for e in ours
        ],
        ordered=False,
    )
    for e in ours:
        log.info("merge.done merge=%s", e["_id"])


async def _drop_taken_back(store: Store, added: Mapping[str, Sequence[str]]) -> None:
    """Step 4 added what the losers' documents listed when it read them; an unmerge that
    took one of those identifiers back from the survivor meanwhile (it moves the identity,
    then pulls it from the survivor's list) may have pulled before step 4 added. Read
    after adding, the identity shows whom it belongs to: what another customer owns leaves
    the survivor's list. An unmerge that moves it later pulls it itself. Owners are compared
    by their live roots: a survivor merged on meanwhile keeps the list it hands on."""
    wanted = {i for idents in added.values() for i in idents}
    if not wanted:
        return
    owner = {
        d["_id"]: d["customer_id"]
        for d in await find_in(store.identities, "_id", wanted, projection={"customer_id": 1})
    }
    # nearly always every identity is the survivor's own: only the others need their roots
    elsewhere = {
        survivor: [i for i in idents if owner.get(i, survivor) != survivor]
        for survivor, idents in added.items()
    }
    if not any(elsewhere.values()):
        return
    live = await roots(store, list({*(owner[i] for v in elsewhere.values() for i in v), *added}))
    ops = [
        UpdateOne({"_id": survivor}, {"$pull": {"identifiers": {"$in": gone}}})
        for survivor, idents in elsewhere.items()
        if (gone := [i for i in idents if live[owner[i]] != live[survivor]])
    ]
    if ops:
        await store.customers.bulk_write(ops, ordered=False)


async def _supersede(store: Store, entry: Doc, now: datetime) -> None:
    """Another merge took the loser first: ours becomes a merge of the two roots."""
    follow_id = deterministic_id(entry["_id"], "follow")
    # the follow-up first: if we crash before marking ours superseded, resuming ours
    # finds the follow-up and finishes both
    await merge(
        store,
        follow_id,
        entry["survivor_id"],
        entry["loser_id"],
        reason=entry["reason"],
        identifier=entry.get("identifier"),
        trigger=entry.get("trigger"),
        now=now,
    )
    await store.merges.update_one(
        {"_id": entry["_id"], "state": "pending"},
        {"$set": {"state": "superseded", "superseded_by": follow_id, "done_at": now}},
    )


async def repoint(store: Store, old: str, new: str, merge_id: str | None = None) -> None:
    """Move identities, interactions and conversations from ``old`` to ``new`` (idempotent)."""
    await repoint_many(store, {old: new}, {old: merge_id} if merge_id else {})


async def repoint_many(
    store: Store, moves: Mapping[str, str], merge_ids: Mapping[str, str] | None = None
) -> None:
    """:func:`repoint` of each ``old: new`` in ``moves`` (no id both old and new), one command
    a collection."""
    if not moves:
        return
    merge_ids = merge_ids or {}
    for coll in (store.identities, store.interactions):
        await coll.bulk_write(
            [
                UpdateMany({"customer_id": old}, {"$set": {"customer_id": new}})
                for old, new in moves.items()
            ],
            ordered=False,
        )
    convs = await find_in(store.conversations, "customer_id", moves)
    if not convs:
        return
    try:
        await store.conversations.bulk_write(
            [
                UpdateOne(
                    {"_id": conv["_id"], "customer_id": conv["customer_id"]},
                    {"$set": {"customer_id": moves[conv["customer_id"]]}},
                )
                for conv in convs
            ],
            ordered=False,
        )
    except BulkWriteError as exc:
        for n in taken_positions(exc):
            conv = convs[n]
            await _close_as_merged(
                store, conv, moves[conv["customer_id"]], merge_ids.get(conv["customer_id"])
            )


async def _close_as_merged(store: Store, conv: Doc, new: str, merge_id: str | None) -> None:
    """Both customers have an active conversation on this thread: the survivor's one carries
    on, this one closes as merged (unmerge reopens it)."""
    other = await store.conversations.find_one(
        {"customer_id": new, "channel": conv["channel"], "thread": conv["thread"], "active": True}
    )
    await store.conversations.update_one(
        {"_id": conv["_id"]},
        {
            "$set": {
                "customer_id": new,
                "active": False,
                "state_before_merge": conv.get("state"),
                "state": "merged",
                "merged_into": other["_id"] if other else None,
                "merge_id": merge_id,
            }
        },
    )


async def settle(store: Store, customer_ids: Sequence[str]) -> dict[str, str]:
    """Re-point anything written to customers that turned out to be tombstones.

    Called by writers after their writes; returns the live root of every id given.
    """
    found = await roots(store, list(set(customer_ids)))
    moves = {old: new for old, new in found.items() if old != new}
    for _ in range(MAX_HOPS):
        if not moves:
            break
        for old, new in moves.items():
            await repoint(store, old, new)
            doc = await store.customers.find_one({"_id": old}, {"identifiers": 1})
            await store.customers.update_one(
                {"_id": new},
                {"$addToSet": {"identifiers": {"$each": (doc or {}).get("identifiers", [])}}},
            )
        # a root may have been merged while we moved things onto it, its own merge's re-point
        # already done: what we moved would stay on a tombstone, so it moves on
        later = await roots(store, list(set(moves.values())))
        moves = {old: new for old, new in later.items() if old != new}
        found = {cid: later.get(root, root) for cid, root in found.items()}
    return found


async def stranded(store: Store) -> list[str]:
    """Tombstones that still own identities, interactions or conversations (none should:
    before 487d13a a merge whose survivor another worker merged meanwhile left what it moved
    on that survivor, hidden from the customer's timeline). Reads every merge's loser, then
    probes by the indexed ``customer_id``."""
    losers = {d["loser_id"] async for d in store.merges.find({}, {"loser_id": 1})}
    if not losers:
        return []
    tombs = [
        d["_id"]
        for d in await find_in(
            store.customers, "_id", losers, {"merged_into": {"$ne": None}}, {"_id": 1}
        )
    ]
    owning: set[str] = set()
    for coll in (store.identities, store.interactions, store.conversations):
        found = await find_in(coll, "customer_id", tombs, projection={"customer_id": 1})
        owning.update(d["customer_id"] for d in found)
    return sorted(owning)


async def repair_stranded(store: Store) -> list[str]:
    """Move what tombstones still own to their live customers (:func:`settle`); returns the
    tombstones it found holding something. Idempotent, safe while workers run."""
    found = await stranded(store)
    if found:
        await settle(store, found)
    return found


async def resume_pending(store: Store, now: datetime) -> int:
    """Finish merges a crash interrupted; returns how many."""
    n = 0
    async for entry in store.merges.find({"state": "pending"}):
        await _run_many(store, [entry], now)
        n += 1
    for state in ("undoing",):
        async for entry in store.merges.find({"state": state}):
            await _undo(store, entry, now)
            n += 1
    return n


async def unmerge(store: Store, merge_id: str, now: datetime, *, by: str | None = None) -> Doc:
    entry = await store.merges.find_one({"_id": merge_id})
    if entry is None:
        raise MergeError(404, "merge not found")
    if entry["state"] == "undone":
        return entry
    if entry["state"] == "pending":
        raise MergeError(409, "this merge is still in progress; try again in a moment")
    later = await store.merges.find_one(
        {"loser_id": entry["survivor_id"], "state": {"$in": ["pending", "done"]}}
    )
    if later is not None:
        raise MergeError(
            409,
            f"the surviving customer was merged again since (merge {later['_id']}); "
            "unmerge that one first",
        )
    entry = await guarded_update(
        store.merges,
        {"_id": merge_id, "state": "done"},
        {"$set": {"state": "undoing", "undo_by": by, "undo_started_at": now}},
    ) or await store.merges.find_one({"_id": merge_id})
    assert entry is not None
    if entry["state"] == "undoing":
        await _undo(store, entry, now)
    result = await store.merges.find_one({"_id": merge_id})
    assert result is not None
    return result


async def _undo(store: Store, entry: Doc, now: datetime) -> None:
    survivor, loser = entry["survivor_id"], entry["loser_id"]
    idents: list[str] = entry["snapshot"]["identities"]
    # the loser lives again, and the two are kept apart from now on
    await store.customers.update_one(
        {"_id": loser},
        {
            "$set": {"merged_into": None, "updated_at": now},
            "$addToSet": {"separated_from": survivor},
        },
    )
    await store.customers.update_one(
        {"_id": survivor},
        {
            "$addToSet": {"separated_from": loser},
            "$pull": {"merged_from": loser},
            "$set": {"updated_at": now},
        },
    )
    holder = survivor
    for _ in range(MAX_HOPS):
        await _mark_split(store, entry, holder, now)
        await _take_back(store, entry, holder)
        # Another merge may have taken the survivor after unmerge() checked it (it refuses
        # one made before): what that merge moved of the loser's is on its survivor. The
        # tombstone comes before its re-point, so a thing we did not find on ``holder`` had
        # moved on before we looked here, and the next hop finds it.
        doc = await store.customers.find_one({"_id": holder}, {"merged_into": 1})
        onward = (doc or {}).get("merged_into")
        if not onward:
            break
        log.info("merge.undo_follows merge=%s from=%s to=%s", entry["_id"], holder, onward)
        for a, b in ((onward, loser), (loser, onward)):
            await store.customers.update_one({"_id": a}, {"$addToSet": {"separated_from": b}})
        holder = onward
    else:
        raise MergeError(500, f"merge chain from {survivor} is longer than {MAX_HOPS}")
    await store.customers.update_one(
        {"_id": loser}, {"$addToSet": {"identifiers": {"$each": idents}}}
    )
    await store.merges.update_one(
        {"_id": entry["_id"], "state": "undoing"}, {"$set": {"state": "undone", "undone_at": now}}
    )
    log.info("merge.undone merge=%s", entry["_id"])


async def _mark_split(store: Store, entry: Doc, holder: str, now: datetime) -> None:
    """Mark ``holder`` before the loser's identities leave it: a writer that read one of them
    as ``holder``'s a moment before and stores its message after :func:`_take_back` looked
    finds the mark when it checks what it wrote (:func:`retake`)."""
    await store.splits.update_one(
        {"_id": deterministic_id(entry["_id"], "split", holder)},
        {
            "$setOnInsert": {
                "customer_id": holder,
                "merge_id": entry["_id"],
                "identifiers": entry["snapshot"]["identities"],
                "at": now,
            }
        },
        upsert=True,
    )


async def split_marks(
    store: Store, customer_ids: Sequence[str], since: datetime | None
) -> list[Doc]:
    """The marks unmerges left on these customers (:func:`_mark_split`) since ``since``, or
    of any age (kept a week, ``store/mongo.py``) when ``since`` is None.

    A writer's batch checks the marks of the last hour: it read its senders' identities a
    moment ago. A replayed batch checks them all: its first attempt stored its messages
    before a crash, however long ago (:func:`retake`).

    Most hours see no unmerge: one read for any mark at all comes first, and only if there
    is one are the customers probed (that probe cost identity resolution 4-6 % of its
    throughput, ``bench/HISTORY.md``)."""
    where: Doc = {} if since is None else {"at": {"$gte": since}}
    if await store.splits.find_one(where, {"_id": 1}) is None:
        return []
    return await find_in(
        store.splits,
        "customer_id",
        customer_ids,
        where,
        projection={"customer_id": 1, "identifiers": 1},
        chunk=PROBE_CHUNK,  # a probe: unmerges are rare
    )


async def retake(
    store: Store, docs: Sequence[Doc], live: Mapping[str, str], marks: Sequence[Doc]
) -> dict[str, str]:
    """Interactions a writer just stored (``docs``; ``live`` maps their customers to their
    roots after :func:`settle`) that an unmerge running meanwhile should have taken back: the
    writer read a sender's identity before the unmerge moved it, and stored the message after
    the unmerge swept. Such an interaction goes to the live owner of its marked senders, with
    the conversation it opened, when none of its senders still belongs to the customer it is
    on. Returns interaction id → that owner.

    ``marks``: :func:`split_marks` of the customers ``docs`` were written to, read after the
    writes. The mark comes before the unmerge moves an identity, so a writer that stored its
    message after the unmerge swept finds it.
    """
    marked: dict[str, set[str]] = {}
    for m in marks:
        marked.setdefault(m["customer_id"], set()).update(m["identifiers"])
    suspects = [d for d in docs if set(d.get("sender") or ()) & marked.get(d["customer_id"], set())]
    if not suspects:
        return {}
    here = {d["_id"]: live.get(d["customer_id"], d["customer_id"]) for d in suspects}
    senders = {s for d in suspects for s in d["sender"]}
    owner = {
        i["_id"]: i["customer_id"]
        for i in await find_in(store.identities, "_id", senders, projection={"customer_id": 1})
    }
    root_of = await roots(store, list(set(owner.values()) | set(here.values())))
    moves: dict[str, tuple[str, str]] = {}  # interaction id -> (from, to)
    for d in suspects:
        at = root_of[here[d["_id"]]]
        if any(root_of[owner[s]] == at for s in d["sender"] if s in owner):
            continue  # one of its senders still belongs here
        went = {
            root_of[owner[s]] for s in d["sender"] if s in owner and s in marked[d["customer_id"]]
        }
        if went:
            moves[d["_id"]] = (here[d["_id"]], min(went))
    for iid, (old, new) in moves.items():
        await store.interactions.update_one(
            {"_id": iid, "customer_id": old}, {"$set": {"customer_id": new}}
        )
        async for conv in store.conversations.find({"customer_id": old, "opened_by": iid}):
            try:
                await store.conversations.update_one(
                    {"_id": conv["_id"], "customer_id": old}, {"$set": {"customer_id": new}}
                )
            except DuplicateKeyError:  # the owner has an active conversation on the thread
                await _close_as_merged(store, conv, new, None)
        log.info("merge.retaken interaction=%s from=%s to=%s", iid, old, new)
    return {iid: new for iid, (_, new) in moves.items()}


async def _take_back(store: Store, entry: Doc, holder: str) -> None:
    """Move what belongs to the merge's loser from ``holder`` (its survivor, or a customer
    that absorbed the survivor since) back to the loser. Idempotent."""
    loser, idents = entry["loser_id"], entry["snapshot"]["identities"]
    await store.identities.update_many(
        {"_id": {"$in": idents}, "customer_id": holder}, {"$set": {"customer_id": loser}}
    )
    # every interaction sent from one of the loser's identifiers goes back, also those that
    # arrived after the merge
    moved = [
        d["_id"]
        async for d in store.interactions.find(
            {"customer_id": holder, "sender": {"$in": idents}}, {"_id": 1}
        )
    ]
    if moved:
        await store.interactions.update_many(
            {"_id": {"$in": moved}}, {"$set": {"customer_id": loser}}
        )
    convs = set(entry["snapshot"]["conversations"])
    async for conv in store.conversations.find(
        {"customer_id": holder, "opened_by": {"$in": moved}}, {"_id": 1}
    ):
        convs.add(conv["_id"])
    ops: list[Any] = []
    async for conv in store.conversations.find({"_id": {"$in": list(convs)}}):
        update: dict[str, Any] = {"customer_id": loser}
        if conv.get("state") == "merged" and conv.get("merge_id") == entry["_id"]:
            update |= {
                "state": conv.get("state_before_merge") or "open",
                "active": True,
                "merged_into": None,
            }
        ops.append(UpdateOne({"_id": conv["_id"]}, {"$set": update}))
    if ops:
        await store.conversations.bulk_write(ops, ordered=False)
    await store.customers.update_one({"_id": holder}, {"$pull": {"identifiers": {"$in": idents}}})


async def history(store: Store, customer_id: str, limit: int = 100) -> list[Doc]:
    """The merges a customer took part in, survivor or merged, newest first.

    One indexed read per side: SecantusDB answers an ``$or`` of the two by scanning every
    merge (measured: 258 ms at 5,000 merges against 2-3 ms for the two reads; a customer
    lookup paid it on every call)."""
    found: dict[str, Doc] = {}
    for side in ("survivor_id", "loser_id"):
        cursor = store.merges.find({side: customer_id}, {"snapshot": 0})
        async for d in cursor.sort("created_at", -1).limit(limit):
            found[d["_id"]] = d
    return sorted(found.values(), key=lambda d: d["created_at"], reverse=True)[:limit]
