"""The pipeline worker as it runs in production: a real Faust worker process between a real
broker (tansu) and a real store (SecantusDB)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from connectors.base import inbound_key
from hub.bootstrap import create_topics
from hub.settings import Settings
from hub.supervisor import tail
from pipeline import contract as c
from pipeline import topics
from store.mongo import Store, connect
from tests.peers import Peer, free_port, start_tansu

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Peer]:
    """A broker of its own per test: topics are global, tests must not see each other's data."""
    peer = start_tansu(tmp_path)
    yield peer
    peer.stop()


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 40.0) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub", "worker"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{self.env['OMNIHUB_WORKER_PORT']}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{tail(self.log, 40)}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout}s:\n{tail(self.log, 40)}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()


@pytest.fixture
async def stack(broker: Peer, mongo_url: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    db = f"w_{uuid.uuid4().hex[:10]}"
    env = {
        "OMNIHUB_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker.port}",
        "OMNIHUB_KAFKA_IDEMPOTENCE": "false",
        "OMNIHUB_MONGO_URI": mongo_url,
        "OMNIHUB_MONGO_DB": db,
        "OMNIHUB_WORKER_PORT": str(free_port()),
        "OMNIHUB_DATA_DIR": str(tmp_path / "data"),
        "OMNIHUB_APP_ID": f"omnihub-test-{db}",
        "OMNIHUB_LOG_LEVEL": "warning",
    }
    settings = Settings(kafka_bootstrap=env["OMNIHUB_KAFKA_BOOTSTRAP"], mongo_uri=mongo_url)
    await create_topics(settings)
    worker = Worker(env, tmp_path / "worker.log")
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, linger_ms=5, acks="all")
    await producer.start()
    store = connect(mongo_url, db)
    try:
        yield {
            "worker": worker,
            "producer": producer,
            "store": store,
            "bootstrap": settings.bootstrap,
        }
    finally:
        worker.stop()
        await producer.stop()
        await store.client.drop_database(db)
        await store.close()


def message(i: int, senders: int = 50) -> c.Message:
    return c.Message.model_validate(
        {
            "channel": "sms",
            "account": "+982100000000",
            "source_id": f"gw-{i}",
            "sender": [{"kind": "phone", "value": f"0912{i % senders:07d}"}],
            "thread": "sms",
            "occurred_at": "2026-03-01T10:00:00Z",
            "text": f"پیام شماره {i}",
        }
    )


async def produce(producer: AIOKafkaProducer, messages: list[c.Message], rate: float = 0) -> None:
    for n, m in enumerate(messages):
        await producer.send(
            topics.INBOUND, c.message_event(m, source="/t").to_json(), key=inbound_key(m)
        )
        if rate and n % 50 == 49:
            await asyncio.sleep(50 / rate)
    await producer.flush()


async def wait_count(store: Store, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = await store.interactions.count_documents({})
        if count >= n:
            return count
        await asyncio.sleep(0.2)
    return count


async def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            await consumer.stop()
            consumer = AIOKafkaConsumer(
                topic, bootstrap_servers=bootstrap, enable_auto_commit=False
            )
            await consumer.start()
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[dict[str, Any]] = []
        idle = 0
        while idle < 3:  # tansu's end offsets are unreliable (INFRA.md): read until quiet
            batch = await consumer.getmany(timeout_ms=500)
            got = [json.loads(r.value) for recs in batch.values() for r in recs]
            out += got
            idle = 0 if got else idle + 1
        return out
    finally:
        await consumer.stop()


async def test_worker_stores_emits_and_dead_letters(stack: dict[str, Any]) -> None:
    stack["worker"].start()
    good = [message(i) for i in range(200)]
    await produce(stack["producer"], good)
    garbage = b"{definitely not an event"
    await stack["producer"].send_and_wait(topics.INBOUND, garbage, key=b"x")
    assert await wait_count(stack["store"], 200, 60) == 200
    assert await stack["store"].customers.count_documents({}) == 50
    events = await read_topic(stack["bootstrap"], topics.CUSTOMER_EVENTS)
    recorded = {e["data"]["interaction_id"] for e in events if e["type"] == c.INTERACTION_RECORDED}
    assert recorded == {m.event_id for m in good}
    assert sum(e["type"] == c.CUSTOMER_CREATED for e in events) >= 50
    dead = await read_topic(stack["bootstrap"], topics.DEADLETTER)
    assert len(dead) >= 1
    assert base64.b64decode(dead[0]["data"]["value_b64"]) == garbage
    assert dead[0]["data"]["stage"] == "validate"
    port = stack["worker"].env["OMNIHUB_WORKER_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert r.headers["Content-Type"].startswith("text/plain")
    assert 'omnihub_ingest_events_total{outcome="stored"} 200.0' in text
    assert 'omnihub_ingest_events_total{outcome="deadletter"} 1.0' in text


async def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(
    stack: dict[str, Any],
) -> None:
    n = 3000
    worker: Worker = stack["worker"]
    store: Store = stack["store"]
    worker.start()
    messages = [message(i, senders=300) for i in range(n)]
    flow = asyncio.create_task(produce(stack["producer"], messages, rate=200))
    # kill while messages are still flowing and some are already stored
    stored_at_kill = await wait_count(store, 100, 60)
    assert not flow.done(), "produce finished before the kill; raise n or lower the rate"
    worker.kill9()
    await flow
    assert stored_at_kill < n
    worker.start()
    assert await wait_count(store, n, 120) == n
    await asyncio.sleep(1.0)  # anything replayed late would show up now
    assert await store.interactions.count_documents({}) == n
    ids = {d["_id"] async for d in store.interactions.find({}, {"_id": 1})}
    assert ids == {m.event_id for m in messages}
    assert await store.customers.count_documents({}) == 300
    assert await store.conversations.count_documents({"active": True}) == 300


async def test_two_workers_racing_on_one_population_agree_with_a_serial_resolver(
    stack: dict[str, Any], mongo_url: str, tmp_path: Path
) -> None:
    """A person's SMS, email and CRM messages are keyed differently, so they land on
    different partitions and two worker processes resolve them at the same time."""
    import random

    from pipeline.agents.ingest import Ingestor
    from tests.integration.test_ingest import Recorder, raw
    from tests.integration.test_merges import partition, population, settled_partition

    messages = population(random.Random(11), people=40, messages=600)
    first: Worker = stack["worker"]
    second = Worker(
        {
            **first.env,
            "OMNIHUB_WORKER_PORT": str(free_port()),
            "OMNIHUB_DATA_DIR": str(tmp_path / "data2"),
        },
        tmp_path / "worker2.log",
    )
    first.start()
    second.start()
    try:
        await produce(stack["producer"], messages)
        assert await wait_count(stack["store"], len(messages), 120) == len(messages)
        # both took part: each owns some partitions of the inbound topic
        for w in (first, second):
            url = f"http://127.0.0.1:{w.env['OMNIHUB_WORKER_PORT']}/healthz"
            with urllib.request.urlopen(url, timeout=5) as r:
                parts = json.loads(r.read())["partitions"]
            assert any(p.startswith(topics.INBOUND) for p in parts), parts
        got = await settled_partition(stack["store"])
    finally:
        second.stop()
    serial = connect(mongo_url, f"serial_{uuid.uuid4().hex[:8]}")
    try:
        from store.mongo import ensure_indexes

        await ensure_indexes(serial)
        one = Ingestor(serial, Recorder())
        for i in range(0, len(messages), 50):
            await one.process([raw(m) for m in messages[i : i + 50]])
        expected = await partition(serial)
    finally:
        await serial.client.drop_database(serial.db.name)
        await serial.close()
    assert got == expected


async def test_a_worker_set_to_one_partition_reads_every_partition_the_topic_has(
    stack: dict[str, Any],
) -> None:
    """A data folder made when `omnihub up` created 4 partitions, started by a version that
    makes 1: its topics keep 4, and the worker (OMNIHUB_PARTITIONS=1) still reads all of them."""
    first: Worker = stack["worker"]
    worker = Worker({**first.env, "OMNIHUB_PARTITIONS": "1"}, first.log)
    worker.start()
    try:
        await produce(stack["producer"], [message(i, senders=40) for i in range(120)])
        assert await wait_count(stack["store"], 120, 60) == 120
        url = f"http://127.0.0.1:{worker.env['OMNIHUB_WORKER_PORT']}/healthz"
        with urllib.request.urlopen(url, timeout=5) as r:
            parts = json.loads(r.read())["partitions"]
        assert sorted(p for p in parts if p.startswith(topics.INBOUND)) == [
            f"{topics.INBOUND}:{p}" for p in range(4)
        ]
    finally:
        worker.stop()
