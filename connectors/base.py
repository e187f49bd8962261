"""The contract every connector keeps (see ARCHITECTURE.md, connector anatomy).

A connector owns one channel: ``parse.py`` turns raw payloads into :class:`Message` (pure),
``service.py`` moves bytes (servers, pollers, webhook routes), ``send.py`` delivers replies.
It acknowledges its peer only after Kafka acknowledged the event (:meth:`Connector.submit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from connectors.errors import UpstreamUnavailable
from pipeline import topics
from pipeline.contract import Message, message_event
from pipeline.publish import Publisher, Record

if TYPE_CHECKING:
    from hub.settings import Settings

log = logging.getLogger(__name__)


def inbound_key(message: Message) -> bytes:
    """channel:first sender identifier — one sender's messages stay in order."""
    first = message.sender[0]
    return f"{message.channel}:{first.kind}:{first.value}".encode()


class Connector(ABC):
    channel: ClassVar[str]

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    @property
    def source(self) -> str:
        return f"/omnihub/connectors/{self.channel}"

    async def submit(self, messages: list[Message]) -> list[str]:
        """Put messages on the inbound topic; returns their event ids once Kafka acked."""
        records = [
            Record(topics.INBOUND, inbound_key(m), message_event(m, source=self.source).to_json())
            for m in messages
        ]
        try:
            await self.publisher.publish(records)
        except KafkaError as exc:
            raise UpstreamUnavailable(f"Kafka did not acknowledge: {exc}") from exc
        return [m.event_id for m in messages]

    @abstractmethod
    async def start(self) -> None:
        """Start servers/pollers (no-op for connectors that live inside the API)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop, finishing in-flight work."""


class OutboundConsumer:
    """The life cycle a connector's consumers of an outbound topic share: the consumer, a task
    that runs it and, if that task dies, takes the process with it (``on_crash``: the
    supervisor, systemd or Kubernetes restarts it rather than leave it in the group idle)."""

    name = "outbound-consumer"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.on_crash: Callable[[], None] = lambda: None
        self.crashed = False

    def group_consumer(
        self, topic: str, group: str, *, fetch_wait_ms: int | None = None
    ) -> AIOKafkaConsumer:
        """A consumer of ``topic`` in ``group`` that commits only what it was told to, from
        the start of the topic the first time."""
        s = self.settings
        wait = {} if fetch_wait_ms is None else {"fetch_max_wait_ms": fetch_wait_ms}
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=s.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.kafka_session_timeout * 1000),
            heartbeat_interval_ms=int(s.kafka_heartbeat_interval * 1000),
            client_id=f"omnihub-{self.name}",
            **wait,
        )

    def run(self, coro: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.create_task(coro, name=self.name)
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("connector.consumer_crashed name=%s error=%r", self.name, task.exception())
        self.crashed = True
        self.on_crash()

    async def commit_each(
        self, handle: Callable[[Any, int, int], Awaitable[Any]], max_records: int
    ) -> None:
        """Handle records one at a time, committing each once handled."""
        assert self.consumer is not None
        while True:
            batch = await self.consumer.getmany(timeout_ms=1000, max_records=max_records)
            for tp, records in batch.items():
                for record in records:
                    await handle(record.value, record.partition, record.offset)
                    await self.consumer.commit(
                        {TopicPartition(tp.topic, tp.partition): record.offset + 1}
                    )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.consumer is not None:
            await self.consumer.stop()
