"""Identity decisions for a batch of messages, first cut: exact match on normalised identifiers.

Pure: the caller looks up what the store knows and applies the decisions. The identity issue
deepens this (merges, suggestions, guard rails); the seam is :func:`resolve_batch`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sighting:
    """The normalised identifiers one event carries (channel-assured first)."""

    event_id: str
    identifiers: tuple[str, ...]


@dataclass(frozen=True)
class Resolution:
    event_id: str
    customer_id: str
    created: bool
    """True when this event brings a customer nobody knew into existence."""
    attach: tuple[str, ...]
    """Identifiers not yet linked that now belong to ``customer_id``."""
    conflicts: tuple[str, ...]
    """Other customers the event's identifiers point at (merge candidates, not merged here)."""


def resolve_batch(
    sightings: Sequence[Sighting],
    known: Mapping[str, str],
    new_customer_id: Callable[[str], str],
) -> list[Resolution]:
    """Decide the customer of every sighting, in order, as if applied one after another.

    ``known`` maps identifiers to their current owner; decisions earlier in the batch are
    visible to later sightings, so two messages from one new sender make one customer.
    """
    owners = dict(known)
    out: list[Resolution] = []
    for s in sightings:
        found = [owners[i] for i in s.identifiers if i in owners]
        if found:
            customer, created = found[0], False
        else:
            customer, created = new_customer_id(s.event_id), True
        attach = tuple(i for i in s.identifiers if i not in owners)
        for ident in attach:
            owners[ident] = customer
        conflicts = tuple(sorted({c for c in found if c != customer}))
        out.append(Resolution(s.event_id, customer, created, attach, conflicts))
    return out
