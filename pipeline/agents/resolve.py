"""Identity resolution of one ingest batch: read what the store knows, let the pure resolver
decide, apply its decisions (links, merges, suggestions, claims) idempotently.

Concurrency without transactions: identities are linked with upserts keyed on the identifier
(a unique ``_id``), so when two workers race the store picks one owner and the loser of the
race decides again with it; merges are resumable log entries (store/merges.py); and after its
writes a batch settles any customer that turned out to be merged meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymongo.errors import ConnectionFailure

from pipeline import contract as c
from store import claims, customers, identities, merges, suggestions
from store.mongo import PROBE_CHUNK, Doc, Store, find_in
from unify.resolver import CustomerInfo, Decision, Policy, Sighting, Suggestion, resolve_batch
from unify.text import name_tokens

log = logging.getLogger("omnihub.resolve")

MAX_RACE_ROUNDS = 8
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Resolved:
    decisions: dict[str, Decision]
    infos: dict[str, CustomerInfo] = field(default_factory=dict)
    """what the store knew of the existing customers the decisions name"""
    merged: list[Doc] = field(default_factory=list)
    """merge log entries this batch executed (or found done on a replay)"""
    shells: dict[str, frozenset[str]] = field(default_factory=dict)
    """customers this batch created, with the identifiers their documents were created with"""


async def resolve(
    store: Store,
    sightings: Sequence[Sighting],
    policy: Policy,
    names: Mapping[str, str | None] | None = None,
) -> Resolved:
    """Decide and link the batch. ``names`` maps event ids to the sender's display name."""
    now = c.utcnow()
    names = names or {}
    by_event = {s.event_id: s for s in sightings}
    lookups = {i for s in sightings for i in (*s.identifiers, *s.claimed)}
    shelled: set[str] = set()
    unsure: set[str] = set()  # shells whose stored identifiers may not be what they own
    for _ in range(MAX_RACE_ROUNDS):
        known = await identities.lookup(store, lookups)
        # one read for the customers the identifiers name; tombstones (rare) lead on to the
        # live customers they were merged into
        tombs: dict[str, str] = {}
        infos = await customers.infos(store, list(set(known.values())), tombstones=tombs)
        live = {cid: cid for cid in known.values()}
        if tombs:
            live.update(await merges.roots(store, list(tombs)))
            roots = set(live.values()) - set(infos)
            infos.update(await customers.infos(store, list(roots)))
        owners = {ident: live[cid] for ident, cid in known.items()}
        for cid in set(owners.values()) - set(infos):
            # cannot happen while customers are written before their identities; if it
            # does, treat the customer as the oldest so every resolver orders it the same
            log.warning("resolve.customer_missing customer=%s", cid)
            infos[cid] = CustomerInfo(cid, EPOCH)
        decisions = resolve_batch(
            sightings, owners, infos, lambda eid: c.derived_id(eid, "customer"), policy
        )
        # a customer exists before any identity points at it (readers rely on that); it is
        # written whole, with the identifiers it is about to own, so that a batch that wins
        # its links has nothing more to write to it
        created = [d for d in decisions if d.created]
        unsure.update(d.customer_id for d in created if d.customer_id in shelled)
        shelled.update(d.customer_id for d in created)
        unsure |= await customers.create_shells(
            store,
            [
                customers.NewCustomer(
                    customer_id=d.customer_id,
                    origin_event_id=d.event_id,
                    display_name=names.get(d.event_id),
                    identifiers=sorted(d.attach),
                    name_tokens=name_tokens(names.get(d.event_id)),
                    created_at=by_event[d.event_id].occurred_at,
                )
                for d in created
            ],
            now,
        )
        proposed = {ident: d.customer_id for d in decisions for ident in d.attach}
        linked = await identities.link(store, proposed, now)
        if all(linked.get(k) == v for k, v in proposed.items()):
            break
        # another worker linked one of these identifiers first: decide again with the winner
        log.info("resolve.identity_race identifiers=%d", len(proposed))
    else:
        raise ConnectionFailure("identity resolution did not settle; will retry the batch")

    # A customer created for a link another worker won stays as it was written; it owns
    # nothing and nothing points at it, so search leaves it out. (Deleting it could race with
    # a replay of the same event linking to it; hiding it with a write could race with another
    # worker that made it the owner of something meanwhile.)
    # A shell written before (a replay, or an earlier round after a lost race) may list
    # identifiers it did not get: the batch's customer write brings it up to date as before.
    shells = {d.customer_id: frozenset(d.attach) for d in created if d.customer_id not in unsure}
    out = Resolved({d.event_id: d for d in decisions}, infos, shells=shells)
    requests = [
        merges.Request(
            c.deterministic_id(d.event_id, "merge", m.loser),
            m.survivor,
            m.loser,
            reason="channel-assured identifier seen on both",
            identifier=m.identifier,
            trigger=d.event_id,
        )
        for d in decisions
        for m in d.merges
    ]
    out.merged.extend(e for e in await merges.merge_many(store, requests, now) if e is not None)
    # a replay after a crash finds its merges already done: report them again all the same,
    # so their events are published (with the same ids) even if the crash came before that
    seen = {e["_id"] for e in out.merged}
    for entry in await find_in(
        store.merges,
        "trigger",
        by_event,
        {"state": {"$in": ["done", "undone"]}},
        chunk=PROBE_CHUNK,  # a probe: few events trigger a merge
    ):
        if entry["_id"] not in seen:
            out.merged.append(entry)
    await _suggest(store, decisions, now)
    return out


async def _suggest(store: Store, decisions: Sequence[Decision], now: datetime) -> None:
    """Record suggestions and claims.

    A claim and a link of the same identifier can happen in two batches at once; each side
    writes first and reads the other side's writes after, so at least one of them sees the
    other and the suggestion is never missed (it is idempotent, both may record it).
    """
    pending: list[tuple[Decision, Suggestion]] = [(d, s) for d in decisions for s in d.suggestions]
    # claims: write, then see whether someone owns the identifier by now
    claimed = [(ident, d.customer_id, d.event_id) for d in decisions for ident in d.claims]
    await claims.record_many(store, claimed, now)
    by_claim = {ident: d for d in decisions for ident in d.claims}
    if by_claim:
        owners = await identities.lookup(store, by_claim)
        live = await merges.roots(store, list(set(owners.values())))
        for ident, owner in owners.items():
            d = by_claim[ident]
            if live[owner] != d.customer_id:
                pending.append(
                    (d, Suggestion("merge", (d.customer_id, live[owner]), ident, "claimed"))
                )
    # links (written in resolve()): see whether someone claimed the identifier before
    attached = {ident: d for d in decisions for ident in d.attach}
    if attached:
        claimed_by = await claims.claimants(store, attached)
        live = await merges.roots(store, [c for cs in claimed_by.values() for c in cs])
        for ident, claimers in claimed_by.items():
            d = attached[ident]
            for other in {live[c] for c in claimers}:
                if other != d.customer_id:
                    pending.append(
                        (d, Suggestion("merge", (d.customer_id, other), ident, "claimed"))
                    )
    docs = [
        {
            "kind": s.kind,
            "customers": list(s.customers),
            "identifier": s.identifier,
            "reason": s.reason,
            "event_id": d.event_id,
        }
        for d, s in pending
    ]
    await suggestions.record_many(store, docs, now)
