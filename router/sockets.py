"""The agents' WebSockets held by this process, and pushing JSON to them.

Pushes reach sockets of this API process only: the router runs inside the one API process
(deploy/ says so). Several API processes would need a fan-out (e.g. a change stream on
``offers``); see README.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any, Protocol

from hub.web import dumps
from store.mongo import Doc

LEADS = ("supervisor", "admin")


class Socket(Protocol):
    @property
    def closed(self) -> bool: ...

    async def send_str(self, data: str) -> None: ...


async def send_json(ws: Socket, payload: dict[str, Any]) -> None:
    """Push to one socket; a socket closing meanwhile is not an error."""
    if ws.closed:
        return
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(dumps(payload).decode())


class Sockets:
    def __init__(self) -> None:
        self.by_agent: dict[str, set[Socket]] = defaultdict(set)
        self.roles: dict[str, str] = {}
        self.teams: dict[str, frozenset[str]] = {}  # as they were when the socket opened

    def add(self, agent_id: str, role: str, ws: Socket, teams: tuple[str, ...] = ()) -> bool:
        """Register a socket; True if it is the agent's first."""
        first = not self.by_agent.get(agent_id)
        self.by_agent[agent_id].add(ws)
        self.roles[agent_id] = role
        self.teams[agent_id] = frozenset(teams)
        return first

    def remove(self, agent_id: str, ws: Socket) -> bool:
        """Forget a socket; True if it was the agent's last."""
        held = self.by_agent.get(agent_id)
        if held is None:
            return False
        held.discard(ws)
        if held:
            return False
        del self.by_agent[agent_id]
        self.roles.pop(agent_id, None)
        self.teams.pop(agent_id, None)
        return True

    def connected(self) -> list[str]:
        return list(self.by_agent)

    def has(self, agent_id: str | None) -> bool:
        return agent_id is not None and bool(self.by_agent.get(agent_id))

    async def notify(self, agent_id: str | None, payload: dict[str, Any]) -> None:
        if agent_id is None:
            return
        for ws in list(self.by_agent.get(agent_id, ())):
            await send_json(ws, payload)

    async def notify_supervisors(self, payload: dict[str, Any], skip: str | None = None) -> None:
        for agent_id, role in list(self.roles.items()):
            if role in LEADS and agent_id != skip:
                await self.notify(agent_id, payload)

    def watchers(self, conv: Doc) -> set[str]:
        """Connected agents whose conversation lists may hold ``conv``: supervisors, the agents
        it is or was with, and the members of its team (whose queue it may be in)."""
        mine = (conv.get("assignee"), conv.get("offer_agent"), conv.get("last_agent"))
        out = {a for a in mine if a and a in self.by_agent}
        team = conv.get("team")
        for agent_id, role in self.roles.items():
            if role in LEADS or (team and team in self.teams.get(agent_id, ())):
                out.add(agent_id)
        return out
