"""Token buckets per key (visitor, address): how fast a widget may send (pure; the clock is
passed in). Buckets that are full again are forgotten, so idle visitors cost nothing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``rate`` tokens a minute refill up to ``burst``; one message takes one token."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self.max_keys = max_keys

    def take(self, key: str, *, rate: float, burst: int, now: float) -> float:
        """0.0 when allowed (a token is taken); else the seconds until one is free."""
        per_second = rate / 60.0
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self.sweep(now, rate=rate, burst=burst)
            b = self._buckets[key] = _Bucket(float(burst), now)
        else:
            b.tokens = min(float(burst), b.tokens + (now - b.at) * per_second)
            b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / per_second

    def give_back(self, key: str) -> None:
        """Undo a take (another limit refused the same message)."""
        b = self._buckets.get(key)
        if b is not None:
            b.tokens += 1.0

    def sweep(self, now: float, *, rate: float, burst: int) -> None:
        """Forget buckets that have refilled: they behave exactly like new ones."""
        per_second = rate / 60.0
        full = [
            k for k, b in self._buckets.items() if b.tokens + (now - b.at) * per_second >= burst
        ]
        for k in full:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
