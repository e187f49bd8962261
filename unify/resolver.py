"""Identity decisions for a batch of messages: who is this, and which customers are one person.

Pure: the caller looks up what the store knows (owners of identifiers, the customers involved,
pairs an agent has separated) and applies the decisions. The rules, in order of importance:

1. A false merge shows one customer's private history to another, so only identifiers the
   channel itself asserted (``channel`` assurance) ever link or merge automatically.
2. An identifier typed by the customer (``claimed``) never becomes an identity; if it belongs to
   another customer the decision is a *suggestion* an agent (or a verification code) confirms.
3. Blocklisted values (own support numbers, ``noreply@``, shared lines) are never used to link.
4. A merge that would give one customer more identifiers of a kind than the cap allows, or that
   an agent undid before, becomes a suggestion instead.
5. The survivor of a merge is the oldest customer (created_at, then id): a total order, so two
   resolvers racing on the same customers always choose the same survivor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Literal


@dataclass(frozen=True)
class Sighting:
    """The normalised identifiers one message carries."""

    event_id: str
    identifiers: tuple[str, ...]
    """channel-assured identifiers"""
    occurred_at: datetime
    claimed: tuple[str, ...] = ()


@dataclass(frozen=True)
class CustomerInfo:
    customer_id: str
    created_at: datetime
    identifiers: tuple[str, ...] = ()
    separated_from: frozenset[str] = frozenset()
    """customers an agent unmerged from this one or refused to merge with it"""
    origin_event_id: str = ""
    """the event that created the customer (not used for decisions)"""
    pending: bool = False
    """a shell whose identities are still being linked (not used for decisions)"""
    segment: str | None = None
    """the customer's segment, e.g. ``vip`` (not used for decisions; routing uses it)"""

    def order(self) -> tuple[datetime, str]:
        return (self.created_at, self.customer_id)


@dataclass(frozen=True)
class Policy:
    blocklist: frozenset[str] = frozenset()
    """normalised identifiers, or glob patterns such as ``email:noreply@*``"""
    caps: Mapping[str, int] = field(default_factory=dict)
    """most identifiers of a kind one customer may have (absent kind: no cap)"""

    def blocked(self, identifier: str) -> bool:
        if identifier in self.blocklist:
            return True
        return any(fnmatchcase(identifier, p) for p in self.blocklist if "*" in p or "?" in p)

    def exceeds_cap(self, identifiers: Sequence[str]) -> str | None:
        counts: dict[str, int] = {}
        for ident in set(identifiers):
            kind = ident.split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        for kind, n in sorted(counts.items()):
            cap = self.caps.get(kind)
            if cap is not None and n > cap:
                return kind
        return None


@dataclass(frozen=True)
class Merge:
    survivor: str
    loser: str
    identifier: str
    """the identifier whose sighting linked them"""


@dataclass(frozen=True)
class Suggestion:
    kind: Literal["merge", "attach"]
    customers: tuple[str, ...]
    identifier: str
    reason: Literal["claimed", "cap", "separated"]


@dataclass(frozen=True)
class Decision:
    event_id: str
    customer_id: str
    created: bool
    """this event brings a customer nobody knew into existence"""
    attach: tuple[str, ...] = ()
    """unowned identifiers that now belong to ``customer_id``"""
    merges: tuple[Merge, ...] = ()
    suggestions: tuple[Suggestion, ...] = ()
    claims: tuple[str, ...] = ()
    """claimed identifiers nobody owns yet: remembered, never linked"""
    ignored: tuple[str, ...] = ()
    """blocklisted identifiers of the message"""


def resolve_batch(
    sightings: Sequence[Sighting],
    owners: Mapping[str, str],
    customers: Mapping[str, CustomerInfo],
    new_customer_id: Callable[[str], str],
    policy: Policy | None = None,
) -> list[Decision]:
    """Decide every sighting, in order, as if applied one after another.

    ``owners`` maps known identifiers to live customers; ``customers`` describes every customer
    in ``owners``. Decisions earlier in the batch (new customers, attaches, merges) are visible
    to later sightings, so a batch gives the same result as its messages one by one.
    """
    policy = policy or Policy()
    state = _State(dict(owners), dict(customers), {})
    return [_decide(s, state, new_customer_id, policy) for s in sightings]


@dataclass
class _State:
    owners: dict[str, str]
    customers: dict[str, CustomerInfo]
    alias: dict[str, str]

    def live(self, customer_id: str) -> str:
        while customer_id in self.alias:
            customer_id = self.alias[customer_id]
        return customer_id


def _decide(
    s: Sighting, st: _State, new_customer_id: Callable[[str], str], policy: Policy
) -> Decision:
    usable = tuple(dict.fromkeys(i for i in s.identifiers if not policy.blocked(i)))
    ignored = tuple(i for i in s.identifiers if policy.blocked(i))
    owned: list[str] = []
    for ident in usable:
        if ident in st.owners:
            owner = st.live(st.owners[ident])
            if owner not in owned:
                owned.append(owner)

    merges: list[Merge] = []
    suggestions: list[Suggestion] = []
    if not owned:
        customer = new_customer_id(s.event_id)
        created = True
        st.customers[customer] = CustomerInfo(customer, s.occurred_at, ())
    else:
        created = False
        owned.sort(key=lambda cid: st.customers[cid].order())
        customer = owned[0]
        link = {c: next(i for i in usable if st.live(st.owners.get(i, "")) == c) for c in owned}
        for other in owned[1:]:
            surv, lose = st.customers[customer], st.customers[other]
            if other in surv.separated_from or customer in lose.separated_from:
                suggestions.append(Suggestion("merge", (customer, other), link[other], "separated"))
            elif policy.exceeds_cap(surv.identifiers + lose.identifiers):
                suggestions.append(Suggestion("merge", (customer, other), link[other], "cap"))
            else:
                merges.append(Merge(customer, other, link[other]))
                st.alias[other] = customer
                st.customers[customer] = CustomerInfo(
                    customer,
                    surv.created_at,
                    surv.identifiers + lose.identifiers,
                    surv.separated_from | lose.separated_from,
                )

    attach: list[str] = []
    for ident in usable:
        if ident in st.owners:
            continue
        info = st.customers[customer]
        if not created and policy.exceeds_cap((*info.identifiers, ident)):
            suggestions.append(Suggestion("attach", (customer,), ident, "cap"))
            continue
        attach.append(ident)
        st.owners[ident] = customer
        st.customers[customer] = CustomerInfo(
            customer, info.created_at, (*info.identifiers, ident), info.separated_from
        )

    claims: list[str] = []
    for ident in dict.fromkeys(s.claimed):
        if policy.blocked(ident) or ident in usable:
            continue
        holder = st.owners.get(ident)
        if holder is None:
            claims.append(ident)
        elif st.live(holder) != customer:
            pair = (customer, st.live(holder))
            suggestions.append(Suggestion("merge", pair, ident, "claimed"))
    return Decision(
        s.event_id,
        customer,
        created,
        tuple(attach),
        tuple(merges),
        tuple(suggestions),
        tuple(claims),
        ignored,
    )
