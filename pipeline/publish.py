"""Publishing events to Kafka and waiting until the broker acknowledged every one."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from pipeline import contract as c
from pipeline import topics


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes


def dead_letter(
    stage: str, error: str, topic: str, partition: int, offset: int, value: bytes, source: str
) -> Record:
    """The dead-letter record for a consumed record that can never be handled: the stage, the
    error and its original bytes. Its id comes from the record's position, so a replay
    dead-letters it once."""
    letter = c.DeadLetter(
        stage=stage,
        error=error[:2000],
        topic=topic,
        partition=partition,
        offset=offset,
        value_b64=base64.b64encode(value).decode(),
        failed_at=c.utcnow(),
    )
    event = c.envelope(
        c.MESSAGE_DEADLETTERED,
        letter,
        id=c.deterministic_id(topic, str(partition), str(offset), "dead"),
        source=source,
        subject=f"{topic}/{partition}/{offset}",
    )
    return Record(topics.DEADLETTER, None, event.to_json())


class Publisher(Protocol):
    async def publish(self, records: Sequence[Record]) -> None:
        """Return only when the broker acknowledged all records; raise otherwise."""


class FaustPublisher:
    """Publishes through a Faust app's producer (used inside the worker)."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def publish(self, records: Sequence[Record]) -> None:
        producer = self._app.producer
        futures = [await producer.send(r.topic, r.key, r.value, None, None, None) for r in records]
        if futures:
            await asyncio.gather(*futures)


class KafkaPublisher:
    """A plain aiokafka producer (used by the API and the router)."""

    def __init__(self, bootstrap: str, *, idempotence: bool, client_id: str) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=idempotence,
            linger_ms=5,
            max_batch_size=1_048_576,  # see pipeline/app.py: few, large record batches
            client_id=client_id,
            request_timeout_ms=15000,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish(self, records: Sequence[Record]) -> None:
        futures = [await self.producer.send(r.topic, r.value, key=r.key) for r in records]
        if futures:
            await asyncio.gather(*futures)
