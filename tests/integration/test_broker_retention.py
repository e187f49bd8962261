"""Retention of the embedded broker (hub/retention.py) against tansu on hub.s3, as `omnihub
up` runs them: a sweep deletes only record batches every consumer group has read, and tansu
goes on serving the partition (groups resume, new readers start at the oldest batch kept)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub import retention
from hub.bootstrap import create_topic
from hub.retention import Bucket, parse_batch
from tests.integration.broker_support import (
    GROUP_TIMING,
    Stack,
    consume,
    produce,
    values,
)
from tests.peers import S3_BUCKET, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def bucket(stack: Stack) -> AsyncIterator[Bucket]:
    async with aiohttp.ClientSession() as session:
        yield Bucket(session, f"http://127.0.0.1:{stack.s3_port}", S3_BUCKET)


async def commit_at(bootstrap: str, topic: str, group: str, offset: int) -> None:
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, **GROUP_TIMING
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def bases(bucket: Bucket, topic: str) -> list[int]:
    found = [parse_batch(k, m) for k, m, _ in await bucket.list("clusters/")]
    return sorted(b.base for b in found if b is not None and b.topic == topic)


@contextlib.asynccontextmanager
async def sweeping(
    stack: Stack, lines: list[str], age: timedelta, **kw: Any
) -> AsyncIterator[None]:
    """retention.run every 0.2 s against the stack, reporting into lines, until the block ends."""
    task = asyncio.create_task(
        retention.run(
            f"http://127.0.0.1:{stack.s3_port}",
            S3_BUCKET,
            age,
            0.2,
            first_after=0,
            report=lines.append,
            **kw,
        )
    )
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_sweep_deletes_only_what_every_group_has_read(stack: Stack, bucket: Bucket) -> None:
    await create_topic(stack.bootstrap, "ret", 1)
    sent = [f"r{i:02d}" for i in range(30)]
    await produce(stack.bootstrap, "ret", sent)  # send_and_wait: one batch (object) each
    assert await bases(bucket, "ret") == list(range(30))
    await commit_at(stack.bootstrap, "ret", "fast", 20)
    await commit_at(stack.bootstrap, "ret", "slow", 5)

    # nothing is old enough yet
    done = await retention.sweep(bucket, timedelta(hours=1))
    assert done.deleted == 0 and await bases(bucket, "ret") == list(range(30))

    # the slow group holds the rest back, and the sweep says so
    done = await retention.sweep(bucket, timedelta(0))
    assert done.deleted == 5 and done.failed == 0
    assert await bases(bucket, "ret") == list(range(5, 30))
    assert "'slow' (committed 5)" in done.summary()

    await commit_at(stack.bootstrap, "ret", "slow", 25)
    done = await retention.sweep(bucket, timedelta(0))
    assert done.deleted == 15
    assert done.plan.held == {("tansu_cluster", "ret", 0): ("fast", 20, 9)}  # 20-28: unread
    assert await bases(bucket, "ret") == list(range(20, 30))

    # tansu serves the trimmed partition: the group resumes where it was, later records
    # arrive, and a reader from the earliest offset starts at the oldest batch kept
    await produce(stack.bootstrap, "ret", ["r30"])
    resumed = await consume(stack.bootstrap, "ret", 11, group="fast", commit=True, linger=1)
    assert values(resumed) == [*sent[20:], "r30"]
    fresh = await consume(stack.bootstrap, "ret", 11, linger=1)
    assert values(fresh) == [*sent[20:], "r30"]
    assert [r.offset for r in sorted(fresh, key=lambda r: r.offset)] == list(range(20, 31))

    # a topic no group reads is left alone
    await create_topic(stack.bootstrap, "unread", 1)
    await produce(stack.bootstrap, "unread", ["u0", "u1", "u2"])
    done = await retention.sweep(bucket, timedelta(0))
    assert await bases(bucket, "unread") == [0, 1, 2]
    assert ("tansu_cluster", "unread", 0) in done.plan.unread


async def test_the_loop_sweeps_and_reports_until_cancelled(stack: Stack, bucket: Bucket) -> None:
    await create_topic(stack.bootstrap, "loop", 1)
    await produce(stack.bootstrap, "loop", [f"l{i}" for i in range(6)])
    await commit_at(stack.bootstrap, "loop", "g", 6)
    lines: list[str] = []
    async with sweeping(stack, lines, timedelta(0)):
        for _ in range(100):
            if lines:
                break
            await asyncio.sleep(0.1)
    assert lines and lines[0].startswith("broker retention: deleted 5 record batches")
    assert await bases(bucket, "loop") == [5]


async def test_the_loop_keeps_the_newest_read_batches_and_reports_once_an_interval(
    stack: Stack, bucket: Bucket
) -> None:
    """However young, read batches beyond the newest keep_read go; the console hears of it
    once, then at most every report_every, while the sweeps go on."""
    await create_topic(stack.bootstrap, "cap", 1)
    await produce(stack.bootstrap, "cap", [f"c{i}" for i in range(6)])
    await commit_at(stack.bootstrap, "cap", "g", 6)
    lines: list[str] = []

    async def until_kept(wanted: list[int]) -> None:
        for _ in range(100):
            if await bases(bucket, "cap") == wanted:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"kept {await bases(bucket, 'cap')}, not {wanted}")

    # nothing is old; a line at the first deletion, then none for an hour
    async with sweeping(stack, lines, timedelta(hours=1), keep_read=2, report_every=3600):
        await until_kept([3, 4, 5])  # 0-4 read: the newest two of them stay, and 5 (newest)
        await produce(stack.bootstrap, "cap", [f"c{i}" for i in range(6, 10)])
        await until_kept([3, 4, 5, 6, 7, 8, 9])  # unread: kept
        await commit_at(stack.bootstrap, "cap", "g", 8)
        await until_kept([6, 7, 8, 9])  # 3-7 read
        await asyncio.sleep(0.5)
    assert len(lines) == 1 and lines[0].startswith("broker retention: deleted 3 record batches")


async def test_doctor_reports_batches_kept_and_warns_when_a_partition_holds_many(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from hub import doctor
    from hub.settings import Settings

    await create_topic(stack.bootstrap, "doc", 1)
    await produce(stack.bootstrap, "doc", [f"d{i}" for i in range(12)])
    await commit_at(stack.bootstrap, "doc", "reader", 9)
    settings = Settings(
        data_dir=tmp_path,
        s3_port=stack.s3_port,
        kafka_port=stack.kafka_port,
        worker_port=free_port(),
        api_port=free_port(),
    )

    async def storage_line() -> str:
        lines: list[str] = []
        await doctor.run_doctor(settings, out=lines.append)
        found = [ln for ln in "\n".join(lines).splitlines() if "broker storage:" in ln]
        assert len(found) == 1, lines
        return found[0]

    line = await storage_line()
    assert line.startswith("  ok    broker storage: 12 record batches in 1 partitions")
    assert "(most: doc/0, 12)" in line and "unread batches: reader 3" in line
    monkeypatch.setattr(doctor, "MANY_BATCHES", 10)
    assert (await storage_line()).startswith("  warn  broker storage: 12 record batches")
