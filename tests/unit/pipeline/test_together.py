"""The worker runs two independent store steps at once (pipeline/agents/ingest.py)."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.errors import AutoReconnect

from pipeline.agents.ingest import _together


async def test_both_results_in_order_and_the_steps_overlap() -> None:
    started: list[str] = []

    async def step(name: str, delay: float) -> str:
        started.append(name)
        await asyncio.sleep(delay)
        return name

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await _together(step("a", 0.2), step("b", 0.2)) == ("a", "b")
    assert loop.time() - t0 < 0.35  # at once, not one after the other
    assert started == ["a", "b"]


async def test_a_failure_cancels_the_other_step_and_is_raised_as_it_is() -> None:
    finished: list[str] = []
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(5)
            finished.append("slow")
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def failing() -> None:
        await asyncio.sleep(0.01)
        raise AutoReconnect("store went away")

    # the caller's retry (Ingestor._retrying) catches the driver's own error type, so it
    # must not arrive wrapped in an ExceptionGroup
    with pytest.raises(AutoReconnect, match="store went away"):
        await _together(slow(), failing())
    assert cancelled.is_set()  # and it is over before the error is raised: no leftover
    await asyncio.sleep(0.05)
    assert finished == []
