"""SLA timers: first response due and resolution due, per conversation.

Due times are set when the router classifies a conversation (by its priority). The sweep
finds conversations past their warning point; for each level newly reached ("warning" when
less than ``sla_warn_fraction`` of the target is left, "breached" past due) it raises the
conversation's priority by one — once, guarded in MongoDB, whichever router gets there first —
emits a ``signal.raised`` event (kind ``sla.first_response`` / ``sla.resolution``) on the
customer-event stream and pushes an alert to the assignee and the supervisors online.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline import contract as c
from pipeline import topics
from pipeline.publish import Record
from router import policy
from store import conversations
from store.mongo import Doc

if TYPE_CHECKING:
    from router.service import Router

SEVERITY = {"warning": "warning", "breached": "critical"}
LEVELS: tuple[policy.SlaLevel, ...] = ("warning", "breached")


async def due_soon(router: Router, now: Any, limit: int = 500) -> list[Doc]:
    cursor = router.store.conversations.find(
        {
            "active": True,
            "$or": [
                {
                    "first_response_at": None,
                    "first_response_warn_at": {"$lte": now},
                    "sla_marks": {"$ne": "first_response:breached"},
                },
                {
                    "resolution_warn_at": {"$lte": now},
                    "sla_marks": {"$ne": "resolution:breached"},
                },
            ],
        }
    ).limit(limit)
    return [d async for d in cursor]


async def sweep(router: Router) -> int:
    """Raise what is due; returns how many alerts were emitted."""
    now = c.utcnow()
    cfg = router.config
    emitted = 0
    for conv in await due_soon(router, now):
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
        c.SIGNAL_RAISED, signal, id=signal.signal_id, source="/omnihub/router",
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
