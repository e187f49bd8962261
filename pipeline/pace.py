"""Consumer fetch waits that follow the traffic: short while records flow, long when idle.

tansu, the embedded broker, answers a consumer's fetch late (a wait of W ms holds the
answer up to W ms even when records are already there), so the fetch wait a consumer asks
for is most of a record's time in the broker. A message reaches an agent over two such
hops (inbound → worker, customer events → router). Measured on 2 cores, one consumer of 4
partitions, 100 records/s: a hop takes p50 41 / p99 74 ms with a 100 ms wait, 17 / 28 ms with
20 ms, for 5 points more of broker CPU (tansu and its S3 server). On an idle stack the
short wait is all cost: every consumer polls the broker 5 times as often for nothing.

So a :class:`FetchPace` uses the short wait from the moment its consumer sees records and
goes back to the long one after ``idle_after`` seconds without any. aiokafka has no
public way to change a running consumer's wait: the pace sets the attribute the consumer
reads when it builds each fetch request (``_fetch_max_wait_ms``, on the consumer and on its
fetcher), pinned by tests/unit/pipeline/test_pace.py against the aiokafka in use.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any


class FetchPace:
    def __init__(self, busy: float, idle: float, idle_after: float = 2.0) -> None:
        """``busy`` and ``idle``: fetch waits in seconds; ``idle_after``: seconds without a
        record before the idle wait is back."""
        if not 0 < busy <= idle:
            raise ValueError(f"busy fetch wait {busy}s must be > 0 and <= the idle one ({idle}s)")
        self.busy_ms = int(busy * 1000)
        self.idle_ms = int(idle * 1000)
        self.idle_after = idle_after
        self.wait_ms = self.idle_ms
        self._consumers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._last_seen = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> FetchPace:
        return cls(settings.kafka_fetch_wait_busy, settings.kafka_fetch_wait)

    def attach(self, consumer: Any) -> None:
        """Pace this aiokafka consumer (before or after it started)."""
        self._consumers.add(consumer)
        self._apply(consumer)

    def saw_records(self) -> None:
        """Records came in: the short wait now, the long one once they stop coming.
        Call it from the event loop."""
        self._last_seen = time.monotonic()
        if self.wait_ms != self.busy_ms:
            self._set(self.busy_ms)
        if self._timer is None and self.busy_ms != self.idle_ms:
            self._timer = asyncio.get_running_loop().call_later(self.idle_after, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        quiet = time.monotonic() - self._last_seen
        if quiet >= self.idle_after:
            self._timer = None
            self._set(self.idle_ms)
        else:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.idle_after - quiet, self._check)

    def _set(self, ms: int) -> None:
        self.wait_ms = ms
        for consumer in list(self._consumers):
            self._apply(consumer)

    def _apply(self, consumer: Any) -> None:
        # the consumer hands its value to the fetcher it creates at start; a started
        # consumer's fetcher reads its own copy for every request
        consumer._fetch_max_wait_ms = self.wait_ms
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = self.wait_ms


__all__ = ["FetchPace"]
