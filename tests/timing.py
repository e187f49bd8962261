"""Timing helpers for tests that compare two reads on the same data (so that the machine's
speed cancels out and only the ratio is asserted)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any


async def fastest(step: Callable[[], Awaitable[Any]], runs: int = 3) -> float:
    """The shortest of ``runs`` timings of ``step()``, in seconds."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        await step()
        best = min(best, time.perf_counter() - started)
    return best
