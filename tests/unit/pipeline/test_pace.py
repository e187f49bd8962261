"""FetchPace: the short fetch wait while records flow, the long one once they stop."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from hub.settings import Settings
from pipeline.pace import FetchPace


async def test_busy_while_records_come_idle_after_they_stop() -> None:
    pace = FetchPace(busy=0.02, idle=0.5, idle_after=0.1)
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")  # never started
    pace.attach(consumer)
    assert consumer._fetch_max_wait_ms == pace.wait_ms == 500
    pace.saw_records()
    assert consumer._fetch_max_wait_ms == 20
    for _ in range(4):  # records keep coming: stays busy past idle_after
        await asyncio.sleep(0.04)
        pace.saw_records()
    assert consumer._fetch_max_wait_ms == 20
    await asyncio.sleep(0.06)
    assert consumer._fetch_max_wait_ms == 20  # 0.06 s quiet < 0.1 s
    await asyncio.sleep(0.1)
    assert consumer._fetch_max_wait_ms == 500
    pace.saw_records()  # and busy again
    assert consumer._fetch_max_wait_ms == 20
    pace.close()
    await asyncio.sleep(0.15)
    assert consumer._fetch_max_wait_ms == 20  # closed: no timer left behind


async def test_a_consumer_attached_while_busy_starts_busy() -> None:
    pace = FetchPace(busy=0.01, idle=0.1, idle_after=0.05)
    pace.saw_records()
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    pace.attach(consumer)
    assert consumer._fetch_max_wait_ms == 10
    await asyncio.sleep(0.1)
    assert consumer._fetch_max_wait_ms == 100


def test_the_busy_wait_cannot_exceed_the_idle_one() -> None:
    with pytest.raises(ValueError, match="busy fetch wait"):
        FetchPace(busy=0.2, idle=0.1)
    with pytest.raises(ValueError, match="kafka_fetch_wait_busy"):
        Settings(kafka_fetch_wait=0.05, kafka_fetch_wait_busy=0.1)
    pace = FetchPace.from_settings(Settings())
    assert (pace.busy_ms, pace.idle_ms) == (20, 100)
