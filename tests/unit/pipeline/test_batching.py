"""The worker's ingest batches (pipeline/batching.py) on a real Faust stream (an agent's test
context): a lone event is not held for the whole window, events that come while a batch is
written make up the next one, and nothing is lost, reordered or taken twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import pytest

from pipeline.batching import take

Batch = tuple[float, list[Any]]  # (loop time yielded, values)


async def run(
    max_size: int,
    within: float,
    quiet: float,
    feed: Callable[[Any], Awaitable[None]],
    expect: int,
    work: float = 0.0,
) -> list[Batch]:
    """Run ``feed(agent)`` against an agent that batches with take() and spends ``work``
    seconds on each batch; return the batches it saw once ``expect`` events came through."""
    app = faust.App("batching-test", broker="kafka://127.0.0.1:1", store="memory://")
    got: list[Batch] = []
    acks: list[bool] = []

    @app.agent()
    async def agent(stream: faust.StreamT[Any]) -> None:
        async for batch in take(stream, max_size, within, quiet):
            got.append((time.monotonic(), [e.value for e in batch]))
            acks.append(stream.enable_acks)
            await asyncio.sleep(work)
            for e in batch:
                await stream.ack(e)

    async with agent.test_context() as running:
        await feed(running)
        deadline = time.monotonic() + 10
        while sum(len(values) for _, values in got) < expect:
            assert time.monotonic() < deadline, f"only {got} came"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # nothing more may come
    assert not any(acks), "auto-ack must be off while batches are taken"
    return got


async def test_a_lone_event_is_taken_once_the_stream_is_quiet_not_after_the_window() -> None:
    sent: list[float] = []

    async def feed(agent: Any) -> None:
        sent.append(time.monotonic())
        await agent.put("only")

    got = await run(500, within=2.0, quiet=0.01, feed=feed, expect=1)
    assert [values for _, values in got] == [["only"]]
    assert got[0][0] - sent[0] < 0.5  # a 2 s window would hold it 2 s


async def test_events_sent_together_come_as_one_batch_and_never_over_max_size() -> None:
    async def feed(agent: Any) -> None:
        for i in range(23):
            await agent.put(i)

    got = await run(10, within=0.2, quiet=0.05, feed=feed, expect=23)
    values = [v for _, batch in got for v in batch]
    assert values == list(range(23))  # nothing lost, reordered or taken twice
    assert [len(batch) for _, batch in got] == [10, 10, 3]
    # the second batch was full and waiting: taken at once, not a window later
    assert got[1][0] - got[0][0] < 0.15


async def test_what_arrives_while_a_batch_is_written_is_the_next_batch() -> None:
    async def feed(agent: Any) -> None:
        await agent.put("first")
        await asyncio.sleep(0.1)  # the first batch is being written (0.4 s)
        for i in range(5):
            await agent.put(i)

    got = await run(100, within=0.05, quiet=0.01, feed=feed, expect=6, work=0.4)
    assert [batch for _, batch in got] == [["first"], [0, 1, 2, 3, 4]]
    # busy: the window after the last batch (0.05 s), not more
    assert 0.4 + 0.04 < got[1][0] - got[0][0] < 0.4 + 0.25


async def test_a_steady_trickle_to_an_idle_worker_is_cut_at_the_window() -> None:
    async def feed(agent: Any) -> None:
        for i in range(40):  # one every 10 ms for 0.4 s, never quiet for 50 ms
            await agent.put(i)
            await asyncio.sleep(0.01)

    got = await run(1000, within=0.1, quiet=0.05, feed=feed, expect=40)
    values = [v for _, batch in got for v in batch]
    assert values == list(range(40))
    assert len(got) >= 3  # a window of 0.1 s over 0.4 s of traffic; without it, one batch


async def test_under_steady_load_batches_keep_the_window_and_stay_large() -> None:
    async def feed(agent: Any) -> None:
        for i in range(100):  # one every 5 ms for 0.5 s, each followed by a quiet 2 ms+
            await agent.put(i)
            await asyncio.sleep(0.005)

    got = await run(1000, within=0.1, quiet=0.002, feed=feed, expect=100, work=0.02)
    values = [v for _, batch in got for v in batch]
    assert values == list(range(100))
    # cut at every quiet gap it would be ~50 batches of 1-2; with the window (0.1 s after the
    # last one, which took 0.02 s) about 5 of ~20
    assert len(got) <= 12, [len(b) for _, b in got]


@pytest.mark.parametrize(
    ("max_size", "within", "quiet"), [(0, 0.05, 0.002), (10, 0, 0.002), (10, 0.05, 0)]
)
async def test_nonsense_bounds_are_refused(max_size: int, within: float, quiet: float) -> None:
    with pytest.raises(ValueError, match="max_size"):
        async for _ in take(None, max_size, within, quiet):  # type: ignore[arg-type]
            pass
