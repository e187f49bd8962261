"""Shared by the embedded-broker integration tests: tansu with durable ``s3://`` storage on
hub.s3 (as `omnihub up` runs them), a fixture-ready stack, and plain produce/consume helpers.

Set OMNIHUB_TEST_S3_SERVER=localbucket to run them against the server omnihub used before
(PyPI localbucket).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from tests.peers import Peer, free_port, start_s3, start_tansu_s3

SERVER = os.environ.get("OMNIHUB_TEST_S3_SERVER", "hub")
GROUP_TIMING = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


@dataclass
class Stack:
    workdir: Path
    data: Path
    server: str
    s3_port: int
    kafka_port: int
    s3: Peer | None = None
    kafka: Peer | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def start(self, server: str | None = None) -> None:
        self.server = server or self.server
        self.s3 = start_s3(self.workdir, self.data, port=self.s3_port, server=self.server)
        self.kafka = start_tansu_s3(self.workdir, self.s3_port, port=self.kafka_port)

    def stop(self, *, kill: bool = False) -> None:
        for peer in (self.kafka, self.s3):  # the broker first: it must not outlive its storage
            if peer is None:
                continue
            if kill:
                os.killpg(peer.proc.pid, signal.SIGKILL)
                peer.proc.wait()
            peer.stop()
        self.kafka = self.s3 = None


def running_stack(tmp_path: Path) -> Iterator[Stack]:
    """A started stack on free ports under tmp_path, stopped afterwards (the ``stack``
    fixture of tests/integration/conftest.py)."""
    s = Stack(tmp_path, tmp_path / "s3", SERVER, free_port(), free_port())
    s.start()
    try:
        yield s
    finally:
        s.stop()


async def produce(bootstrap: str, topic: str, values: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(topic, v.encode(), key=v.encode())
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topic: str,
    want: int,
    *,
    group: str | None = None,
    commit: bool = False,
    timeout: float = 30.0,
    linger: float = 0.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `want` records (from the group's committed offsets, else the earliest), then wait
    `linger` seconds more to catch any record too many; commit if asked."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **GROUP_TIMING,
    )
    await consumer.start()
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got += records
        end = time.monotonic() + linger
        while time.monotonic() < end:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got += records
        if commit:
            await consumer.commit()
    finally:
        await consumer.stop()
    return got


def values(records: list[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return sorted(r.value.decode() for r in records if r.value is not None)
