"""SLA timers: first response due and resolution due, per conversation.

Due times are set when the router classifies a conversation (by its priority). The sweep
finds conversations past their warning point; for each level newly reached ("warning" when
less than ``sla_warn_fraction`` of the target is left, "breached" past due) it raises the
conversation's priority by one — once, guarded in MongoDB, whichever router gets there first —
emits a ``signal.raised`` event (kind ``sla.first_response`` / ``sla.resolution``) on the
customer-event stream and pushes an alert to the assignee and the supervisors online.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipeline import contract as c
from pipeline import topics
from pipeline.publish import Record
from router import policy
from store import conversations, sla_timers
from store.mongo import Doc, Store

if TYPE_CHECKING:
    from router.service import Router

SEVERITY = {"warning": "warning", "breached": "critical"}
LEVELS: tuple[policy.SlaLevel, ...] = ("warning", "breached")


def next_at(conv: Doc) -> datetime | None:
    """When the sweep next has something to raise on this conversation: the earliest level
    not yet marked of its running clocks (first response until answered, resolution until
    resolved); None when nothing is left."""
    if not conv.get("active") or conv.get("classified_at") is None:
        return None
    marks = set(conv.get("sla_marks") or ())
    clocks = [("resolution", conv.get("resolution_warn_at"), conv.get("resolution_due"))]
    if conv.get("first_response_at") is None:
        fr = ("first_response", conv.get("first_response_warn_at"), conv.get("first_response_due"))
        clocks.append(fr)
    times = []
    for clock, warn_at, due in clocks:
        if f"{clock}:warning" not in marks and warn_at is not None:
            times.append(warn_at)
        elif f"{clock}:breached" not in marks and due is not None:
            times.append(due)
    return min(times, default=None)


async def arm(store: Store, convs: Iterable[Doc]) -> None:
    """Set the SLA timers of conversations that got their clocks (see store/sla_timers)."""
    await sla_timers.arm(store, {d["_id"]: next_at(d) for d in convs})


async def arm_active(store: Store) -> int:
    """Set the timers of every active conversation (at start: conversations classified by a
    version without timers, or while no router ran). Returns how many have one."""
    due = {d["_id"]: next_at(d) async for d in store.conversations.find({"active": True})}
    await sla_timers.arm(store, due)
    return sum(at is not None for at in due.values())


async def due_soon(router: Router, now: Any, limit: int = 500) -> list[tuple[Doc, datetime]]:
    """The conversations whose timer is due, with the timer as read (see store/sla_timers)."""
    timers = await sla_timers.due(router.store, now, limit)
    convs = await conversations.get_many(router.store, list(timers))
    for gone in set(timers) - set(convs):
        await sla_timers.advance(router.store, gone, timers[gone], None)
    return [(convs[cid], at) for cid, at in timers.items() if cid in convs]


async def sweep(router: Router) -> int:
    """Raise what is due; returns how many alerts were emitted."""
    now = c.utcnow()
    cfg = router.config
    emitted = 0
    for conv, timer in await due_soon(router, now):
        if next_at(conv) is None:  # resolved, or every level raised already
            await sla_timers.advance(router.store, conv["_id"], timer, None)
            continue
        clocks = [("resolution", conv.get("resolution_due"), cfg.sla_resolution)]
        if conv.get("first_response_at") is None:
            fr = ("first_response", conv.get("first_response_due"), cfg.sla_first_response)
            clocks.insert(0, fr)
        for clock, due, targets in clocks:
            # the target the due time was computed from: priority before SLA raises
            base = int(conv.get("base_priority") or 0)
            target = policy.sla_target(targets, base)
            level = policy.sla_level(now, due, target, cfg.sla_warn_fraction)
            if level is None:
                continue
            for reached in LEVELS[: LEVELS.index(level) + 1]:
                mark = f"{clock}:{reached}"
                if mark in (conv.get("sla_marks") or []):
                    continue
                raised = await conversations.raise_for_sla(router.store, conv["_id"], mark, 1)
                if raised is None:
                    continue  # another router raised it, or it was resolved meanwhile
                conv = raised
                await _alert(router, conv, clock, reached, due)
                emitted += 1
        await sla_timers.advance(router.store, conv["_id"], timer, next_at(conv))
    return emitted


async def _alert(router: Router, conv: Doc, clock: str, level: str, due: Any) -> None:
    kind = f"sla.{clock}"
    signal = c.SignalRaised(
        signal_id=c.derived_id(conv["_id"], f"{kind}:{level}:{due.isoformat()}"),
        customer_id=conv["customer_id"],
        conversation_id=conv["_id"],
        kind=kind,
        severity=SEVERITY[level],  # type: ignore[arg-type]
        detail=f"{clock.replace('_', ' ')} {'overdue' if level == 'breached' else 'due'} "
        f"at {due.isoformat()}",
    )
    event = c.envelope(
        c.SIGNAL_RAISED,
        signal,
        id=signal.signal_id,
        source="/omnihub/router",
        subject=conv["customer_id"],
    )
    await router.publisher.publish(
        [Record(topics.CUSTOMER_EVENTS, conv["customer_id"].encode(), event.to_json())]
    )
    payload = {
        "type": "sla",
        "signal_id": signal.signal_id,
        "kind": kind,
        "severity": signal.severity,
        "conversation_id": conv["_id"],
        "customer_id": conv["customer_id"],
        "assignee": conv.get("assignee"),
        "priority": conv.get("priority", 0),
        "due": due,
    }
    await router.sockets.notify(conv.get("assignee"), payload)
    await router.sockets.notify_supervisors(payload, skip=conv.get("assignee"))
