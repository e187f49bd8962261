"""Outbound on the ``api`` channel: replies are published on ``omnihub.outbound.api.v1`` for
the pushing system to consume. That topic *is* the delivery (there is no peer to send to), so
the recorder here does what every channel's sender does once its peer accepted a reply: it
puts the sent copy on the inbound topic (``direction="out"``), and the reply lands on the
customer's timeline for the agent and the next agent to see.

Verification codes (conversation ``verification:…``) are not recorded: an agent who could
read the code could confirm an identifier on the customer's behalf.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import Counter

from connectors.base import OutboundConsumer, inbound_key
from hub.settings import Settings
from pipeline import contract as c
from pipeline import topics
from pipeline.publish import Publisher, Record, dead_letter

log = logging.getLogger("omnihub.api.send")

OUTBOUND_TOPIC = topics.outbound("api")
SOURCE = "/omnihub/connectors/api"
RECORDED = Counter("omnihub_api_replies_recorded_total", "api-channel replies", ["outcome"])


def sent_copy(reply: c.Reply) -> c.Message | None:
    """The timeline entry of a reply, or None for what is not recorded (verifications)."""
    if reply.conversation_id.startswith("verification:") or not reply.to:
        return None
    kind, _, value = reply.to[0].partition(":")
    return c.Message(
        channel="api",
        direction="out",
        account=reply.account,
        source_id=f"omnihub-reply:{reply.reply_id}",
        sender=[c.Identifier(kind=kind, value=value)],  # type: ignore[arg-type]
        display_name=None,
        thread=reply.thread,
        occurred_at=reply.requested_at,
        subject=reply.subject,
        text=reply.text,
        html=reply.html,
        attachments=list(reply.attachments),
        kind="message",
        quoted_text=None,
        in_reply_to=None,
    )


def records_for(value: bytes, partition: int, offset: int) -> tuple[str, list[Record]]:
    """What one outbound record becomes: (outcome, records to publish). Pure."""
    try:
        reply: c.Reply = c.parse_event(value, expect=c.REPLY_REQUESTED).data
        copy = sent_copy(reply)
    except (c.ContractError, ValueError) as exc:
        dead = dead_letter("api.send", str(exc), OUTBOUND_TOPIC, partition, offset, value, SOURCE)
        return "dead", [dead]
    if copy is None:
        return "skipped", []
    event = c.message_event(copy, source=SOURCE, time=reply.requested_at)  # replays: same bytes
    return "recorded", [Record(topics.INBOUND, inbound_key(copy), event.to_json())]


class ReplyRecorder(OutboundConsumer):
    """Consumes the api outbound topic with its own group; commits after publishing."""

    name = "api-send"

    def __init__(self, publisher: Publisher, settings: Settings) -> None:
        super().__init__(settings)
        self.publisher = publisher

    async def start(self) -> None:
        s = self.settings
        self.consumer = self.group_consumer(
            OUTBOUND_TOPIC, s.api_outbound_group, fetch_wait_ms=int(s.kafka_fetch_wait * 1000)
        )
        await self.consumer.start()
        self.run(self._run())

    async def _run(self) -> None:
        assert self.consumer is not None
        while True:
            try:
                batch = await self.consumer.getmany(timeout_ms=1000, max_records=200)
                for tp, items in batch.items():
                    try:
                        await self._handle(tp, items)
                    except Exception:
                        self.consumer.seek(tp, items[0].offset)  # the batch comes again
                        raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka away: nothing committed, retried after a pause
                log.warning("api.send_retry error=%s", exc)
                await asyncio.sleep(1.0)

    async def _handle(self, tp: TopicPartition, items: list[Any]) -> None:
        assert self.consumer is not None
        out: list[Record] = []
        outcomes: list[str] = []
        for item in items:
            if item.value is None:
                continue
            outcome, records = records_for(item.value, item.partition, item.offset)
            outcomes.append(outcome)
            out += records
        if out:
            await self.publisher.publish(out)
        await self.consumer.commit({tp: items[-1].offset + 1})
        for outcome in outcomes:
            RECORDED.labels(outcome).inc()
