"""The embedded broker as `omnihub up` runs it: tansu with durable ``s3://`` storage on hub.s3.

Set OMNIHUB_TEST_S3_SERVER=localbucket to run the same tests against the server omnihub used
before (PyPI localbucket): the racing-producers and the latency tests fail there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hub.bootstrap import create_topic
from tests.integration.broker_support import (
    Stack,
    consume,
    produce,
    values,
)
from tests.peers import free_port

pytestmark = pytest.mark.integration


async def test_records_and_offsets_survive_restarts_and_kill_9(stack: Stack) -> None:
    await create_topic(stack.bootstrap, "orders", 2)
    first = [f"o{i:03d}" for i in range(40)]
    await produce(stack.bootstrap, "orders", first)
    got = await consume(stack.bootstrap, "orders", 40, group="g", commit=True)
    assert values(got) == first

    later = [f"o{i:03d}" for i in range(40, 50)]
    await produce(stack.bootstrap, "orders", later)
    stack.stop()
    stack.start()
    # the group resumes after its commit; everything is still there from the start
    assert (
        values(await consume(stack.bootstrap, "orders", 10, group="g", commit=True, linger=1))
        == later
    )
    assert values(await consume(stack.bootstrap, "orders", 50)) == first + later

    stack.stop(kill=True)  # kill -9 both: nothing acknowledged may be lost
    stack.start()
    await produce(stack.bootstrap, "orders", ["o050"])
    assert values(await consume(stack.bootstrap, "orders", 1, group="g", linger=1)) == ["o050"]
    assert values(await consume(stack.bootstrap, "orders", 51)) == [*first, *later, "o050"]


async def test_racing_producers_get_distinct_offsets(stack: Stack) -> None:
    """Tansu gives out offsets by compare-and-set on the partition's watermark.json (If-Match):
    two producers on one partition must both succeed with distinct offsets. (A server that
    ignores If-Match hands both the same offset, and one produce fails.)"""
    await create_topic(stack.bootstrap, "race", 1)
    producers = [AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all") for _ in range(2)]
    for p in producers:
        await p.start()
    try:
        futures = [await producers[i % 2].send("race", f"r{i}".encode()) for i in range(200)]
        results = await asyncio.gather(*futures)
    finally:
        for p in producers:
            await p.stop()
    assert sorted(r.offset for r in results) == list(range(200))
    assert len(await consume(stack.bootstrap, "race", 200)) == 200


async def test_data_written_through_localbucket_is_kept(tmp_path: Path) -> None:
    """An `omnihub up` data folder from before (localbucket) works after the upgrade."""
    stack = Stack(tmp_path, tmp_path / "s3", "localbucket", free_port(), free_port())
    stack.start()
    try:
        await create_topic(stack.bootstrap, "inbound", 2)
        old = [f"m{i:02d}" for i in range(30)]
        await produce(stack.bootstrap, "inbound", old)
        assert (
            values(await consume(stack.bootstrap, "inbound", 25, group="w", commit=True, linger=1))
            == old
        )
        stack.stop()

        stack.start("hub")
        new = ["m30", "m31"]
        await produce(stack.bootstrap, "inbound", new)
        assert values(await consume(stack.bootstrap, "inbound", 2, group="w", linger=1)) == new
        assert values(await consume(stack.bootstrap, "inbound", 32)) == old + new
    finally:
        stack.stop()


async def test_latency_stays_low_after_many_batches(stack: Stack) -> None:
    """Regression: tansu LISTs a partition's every record batch on each fetch. With localbucket
    (which walked and hashed the whole bucket for each LIST page) p99 produce→consume latency
    at 20 msg/s was many seconds after ~2,000 batches and consumption stalled at ~6,000."""
    await create_topic(stack.bootstrap, "lat", 1)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    consumer = AIOKafkaConsumer(
        "lat",
        bootstrap_servers=stack.bootstrap,
        auto_offset_reset="latest",
        fetch_max_wait_ms=500,
    )
    try:
        for i in range(3000):  # one batch each: send_and_wait never lets a second one join
            await producer.send_and_wait("lat", b"x" * 300, key=f"pre{i}".encode())
        await consumer.start()
        await asyncio.sleep(2)
        sent: dict[bytes, float] = {}
        latencies: list[float] = []
        all_read = asyncio.Event()

        async def read() -> None:
            async for m in consumer:
                if m.key in sent:
                    latencies.append(time.perf_counter() - sent[m.key])
                    if len(latencies) == 100:
                        all_read.set()

        reader = asyncio.create_task(read())
        t0 = time.perf_counter()
        pending = []
        for i in range(100):  # 20 msg/s for 5 s
            key = f"m{i}".encode()
            sent[key] = time.perf_counter()
            pending.append(asyncio.create_task(producer.send_and_wait("lat", b"y" * 300, key=key)))
            await asyncio.sleep(max(0.0, t0 + (i + 1) / 20 - time.perf_counter()))
        await asyncio.gather(*pending)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_read.wait(), 20)
        reader.cancel()
    finally:
        await consumer.stop()
        await producer.stop()
    latencies.sort()
    assert len(latencies) == 100, f"only {len(latencies)} of 100 records arrived within 20 s"
    p50, p99 = latencies[50], latencies[98]
    print(f"produce→consume after 3,000 batches: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    assert p99 < 2.0, f"p99 {p99:.2f}s (p50 {p50:.2f}s)"
