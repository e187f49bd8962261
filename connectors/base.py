"""The contract every connector keeps (see ARCHITECTURE.md, connector anatomy).

A connector owns one channel: ``parse.py`` turns raw payloads into :class:`Message` (pure),
``service.py`` moves bytes (servers, pollers, webhook routes), ``send.py`` delivers replies.
It acknowledges its peer only after Kafka acknowledged the event (:meth:`Connector.submit`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from aiokafka.errors import KafkaError

from connectors.errors import UpstreamUnavailable
from pipeline import topics
from pipeline.contract import Message, message_event
from pipeline.publish import Publisher, Record


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
