"""FetchPace against the real broker: the wait it sets is the one on the wire, and tansu
answers by it (a fetch on a quiet partition comes back after about that long)."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest

from hub.bootstrap import create_topic
from pipeline.pace import FetchPace


async def test_a_started_consumer_fetches_with_the_pace_s_wait(bootstrap: str) -> None:
    topic = f"pace-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, 1)
    pace = FetchPace(busy=0.02, idle=0.4, idle_after=1.5)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=pace.wait_ms
    )
    await consumer.start()
    sent: list[tuple[float, int]] = []  # (when, max wait) of each fetch request
    send = consumer._client.send

    async def spy(node_id, request, **kw):  # type: ignore[no-untyped-def]
        if isinstance(request, FetchRequest):
            sent.append((time.monotonic(), request._max_wait_ms))
        return await send(node_id, request, **kw)

    consumer._client.send = spy
    try:
        pace.attach(consumer)
        consumer.assign([TopicPartition(topic, 0)])

        async def fetches(seconds: float) -> list[int]:
            start = time.monotonic()
            await asyncio.sleep(seconds)
            return [w for at, w in sent if at >= start]

        idle = await fetches(1.0)
        pace.saw_records()
        await asyncio.sleep(0.45)  # the fetch already waiting ends
        busy = await fetches(0.5)
        await asyncio.sleep(0.6)  # idle_after passes, the last short fetch ends
        back = await fetches(1.0)
    finally:
        pace.close()
        await consumer.stop()
    # tansu holds a fetch on a quiet partition for its whole wait: ~2.5 a second at 400 ms,
    # ~50 at 20 ms (a loaded machine answers later, so fewer; never as few as idle)
    assert idle and set(idle) == {400} and len(idle) <= 4, idle
    assert busy and set(busy) == {20} and len(busy) >= 6, busy
    assert back and set(back) == {400} and len(back) <= 4, back
