"""The widget sockets open in this process ("tabs"), by visitor, with backpressure.

Every socket has a bounded queue of frames and at most one writer task, started when frames
are queued and gone when the queue is empty, so thousands of idle sockets hold no task. A
visitor whose browser does not read (the queue is full) is dropped — its connection is aborted
and the widget reconnects and reads its history — and never slows down anybody else: pushing
to a socket never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge

from connectors.webchat.parse import Profile, SignedIdentity
from hub.web import dumps

log = logging.getLogger("omnihub.webchat")

SOCKETS = Gauge("omnihub_webchat_sockets", "open widget sockets")
DROPPED = Counter(
    "omnihub_webchat_slow_consumers_total", "widget sockets dropped for not reading their frames"
)


@dataclass(eq=False)
class Tab:
    """One open widget (one browser tab) of one visitor."""

    ws: web.WebSocketResponse
    request: web.Request
    inbox: str
    visitor_id: str
    session: str
    ip: str
    queue_size: int
    identity: SignedIdentity | None = None
    profile: Profile | None = None
    typing: str = "stop"
    typing_at: float = 0.0
    # (customer id, conversation id, valid until) found for typing signals
    conversation: tuple[str, str, float] | None = None
    # typing signals leave one at a time, in the order typed (a "stop" overtaking its "start"
    # would leave the agent's indicator on)
    typing_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    dropped: bool = False
    _queue: asyncio.Queue[str] = field(init=False)
    _writer: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(self.queue_size)

    @property
    def key(self) -> tuple[str, str]:
        return (self.inbox, self.visitor_id)

    def push(self, frame: dict[str, Any]) -> bool:
        """Queue a frame; False if the socket is gone or was dropped for being too slow."""
        if self.dropped or self.ws.closed:
            return False
        try:
            self._queue.put_nowait(dumps(frame).decode())
        except asyncio.QueueFull:
            self.drop()
            return False
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return True

    async def _drain(self) -> None:
        try:
            while not self._queue.empty():
                await self.ws.send_str(self._queue.get_nowait())
        except (ConnectionError, RuntimeError) as exc:  # the socket closed meanwhile
            log.debug("webchat.send_failed error=%s", exc)

    def drop(self) -> None:
        """A consumer too slow to keep up: abort its connection (it will reconnect)."""
        if self.dropped:
            return
        self.dropped = True
        DROPPED.inc()
        log.warning("webchat.slow_consumer_dropped inbox=%s queued=%d", self.inbox, self.queue_size)
        if self._writer is not None:
            self._writer.cancel()
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def close(self, code: int, message: bytes) -> None:
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), 1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code, message=message), 2.0)


class Tabs:
    """Open tabs by visitor, and open connections by address (for the per-address cap)."""

    def __init__(self) -> None:
        self._by_visitor: dict[tuple[str, str], set[Tab]] = {}
        self._by_ip: Tally[str] = Tally()

    def connect_ip(self, ip: str, limit: int) -> bool:
        """Count a new connection from ``ip``; False (not counted) when it holds ``limit``."""
        if self._by_ip[ip] >= limit:
            return False
        self._by_ip[ip] += 1
        return True

    def disconnect_ip(self, ip: str) -> None:
        self._by_ip[ip] -= 1
        if self._by_ip[ip] <= 0:
            del self._by_ip[ip]

    def add(self, tab: Tab) -> None:
        self._by_visitor.setdefault(tab.key, set()).add(tab)
        SOCKETS.inc()

    def remove(self, tab: Tab) -> None:
        held = self._by_visitor.get(tab.key)
        if held is None or tab not in held:
            return
        held.discard(tab)
        SOCKETS.dec()
        if not held:
            del self._by_visitor[tab.key]

    def of(self, inbox: str, visitor_id: str) -> list[Tab]:
        return list(self._by_visitor.get((inbox, visitor_id), ()))

    def all(self) -> list[Tab]:
        return [t for tabs in self._by_visitor.values() for t in tabs]

    def __len__(self) -> int:
        return sum(len(t) for t in self._by_visitor.values())
