"""Pure routing policy, first cut: round-robin over online agents.

No I/O: the service feeds agent snapshots in and reserves the winner atomically in the store.
The router issue deepens this (skills, capacity, stickiness, priority queues).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class AgentView:
    agent_id: str
    online: bool
    last_offered_at: datetime | None


def rank(agents: Iterable[AgentView], exclude: Sequence[str] = ()) -> list[AgentView]:
    """Eligible agents, best first: online, not excluded, longest since their last offer."""
    skip = set(exclude)
    eligible = [a for a in agents if a.online and a.agent_id not in skip]
    # never-offered agents first, then the oldest turn; ties broken by id for determinism
    return sorted(
        eligible,
        key=lambda a: (
            a.last_offered_at is not None,
            a.last_offered_at or datetime.min,
            a.agent_id,
        ),
    )
