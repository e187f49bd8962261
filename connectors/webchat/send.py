"""Outbound web chat: agent replies and agent typing from ``omnihub.outbound.webchat.v1``.

Two consumers of that topic, because they answer different questions:

* :class:`ReplyRecorder` (consumer group ``webchat_outbound_group``, one copy of each reply
  across all replicas): records every reply on the visitor's timeline — a ``message.received``
  with ``direction="out"`` on the inbound topic, as email's sender does — and reports
  ``reply.status``; then commits. A record that is not a valid event is dead-lettered, never
  retried forever and never a crash. A visitor without an open tab still gets the reply: it is
  on the timeline and comes with the history on the next connect.
* :class:`LiveFanout` (no group: every replica reads every partition from the end) pushes each
  reply and each agent typing signal to the visitor's tabs held by *this* process, so a visitor
  reaches the agent whichever replica their tabs are connected to.

The timeline copy has a deterministic id (channel, inbox, ``reply/<reply id>/<visitor>``): a
replay records nothing twice, and the pushed frame carries the same id as the history, so the
widget never shows a reply twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from connectors.base import OutboundConsumer, inbound_key
from hub.settings import Settings
from pipeline import contract as c
from pipeline import topics
from pipeline.publish import Publisher, Record, dead_letter
from store.mongo import Store

if TYPE_CHECKING:
    from connectors.webchat.service import WebchatConnector

log = logging.getLogger("omnihub.webchat.send")

OUTBOUND_TOPIC = topics.outbound("webchat")
REPLIES = Counter("omnihub_webchat_replies_total", "agent replies recorded", ["status"])
PUSHED = Counter("omnihub_webchat_pushed_total", "frames pushed to visitors' tabs", ["kind"])
OUTBOUND_TYPES = {c.REPLY_REQUESTED, c.CONVERSATION_TYPING}


def visitors_of(reply: c.Reply) -> list[str]:
    """The web chat visitor ids a reply goes to (its ``webchat:`` recipients)."""
    out = []
    for to in reply.to:
        kind, _, value = to.partition(":")
        if kind == "webchat" and value and value not in out:
            out.append(value)
    return out


def reply_source_id(reply: c.Reply, visitor_id: str) -> str:
    return f"reply/{reply.reply_id}/{visitor_id}"


def event_ids(reply: c.Reply) -> dict[str, str]:
    """Visitor id → id of the timeline entry of this reply for them."""
    return {
        v: c.message_event_id("webchat", reply.account, reply_source_id(reply, v))
        for v in visitors_of(reply)
    }


def sent_copy(reply: c.Reply, visitor_id: str) -> c.Message:
    # The visitor's identifier is the "sender": ingest files the entry on their timeline by it.
    return c.Message.model_validate(
        {
            "channel": "webchat",
            "direction": "out",
            "account": reply.account,
            "source_id": reply_source_id(reply, visitor_id),
            "sender": [{"kind": "webchat", "value": visitor_id, "assurance": "channel"}],
            "thread": reply.thread,
            "occurred_at": reply.requested_at,
            "text": reply.text,
            "html": reply.html,
            "attachments": list(reply.attachments),
            "in_reply_to": reply.in_reply_to,
        }
    )


class ReplyRecorder(OutboundConsumer):
    """Records agent replies on the timeline and reports their status; commits per record."""

    name = "webchat-record"

    def __init__(
        self, connector: WebchatConnector, publisher: Publisher, store: Store, settings: Settings
    ) -> None:
        super().__init__(settings)
        self.connector = connector
        self.publisher = publisher
        self.store = store
        self.source = connector.source

    async def start(self) -> None:
        self.consumer = self.group_consumer(
            OUTBOUND_TOPIC, self.settings.webchat_outbound_group, fetch_wait_ms=200
        )
        await self.consumer.start()
        self.run(self.commit_each(self.handle, max_records=100))

    async def handle(self, value: bytes | None, partition: int = 0, offset: int = 0) -> str:
        """Record one outbound event; returns what became of it."""
        try:
            event = c.parse_event(value or b"")
            if event.type not in OUTBOUND_TYPES:
                raise c.ContractError(f"unexpected event type {event.type} on {OUTBOUND_TOPIC}")
        except c.ContractError as exc:
            await self._dead(value or b"", partition, offset, str(exc))
            return "deadletter"
        if event.type == c.CONVERSATION_TYPING:
            return "typing"  # ephemeral: the fanout shows it, nothing to record
        reply: c.Reply = event.data
        if reply.channel != "webchat":
            await self._dead(value or b"", partition, offset, f"reply for channel {reply.channel}")
            return "deadletter"
        if reply.account not in self.connector.inboxes:
            return await self._final(reply, "failed", f"no web chat inbox {reply.account!r} here")
        if not visitors_of(reply):
            return await self._final(reply, "failed", "the reply has no webchat: recipient")
        return await self._final(reply, "sent", None)

    async def _final(self, reply: c.Reply, status: str, error: str | None) -> str:
        records = []
        source_id = None
        if status == "sent":
            for visitor_id in visitors_of(reply):
                copy = sent_copy(reply, visitor_id)
                source_id = source_id or copy.source_id
                event = c.message_event(copy, source=self.source)
                records.append(Record(topics.INBOUND, inbound_key(copy), event.to_json()))
        data = c.ReplyStatus(
            reply_id=reply.reply_id,
            conversation_id=reply.conversation_id,
            customer_id=reply.customer_id,
            channel="webchat",
            status=status,  # type: ignore[arg-type]
            source_id=source_id,
            error=error,
            at=c.utcnow(),
        )
        status_event = c.envelope(
            c.REPLY_STATUS,
            data,
            id=c.deterministic_id(reply.reply_id, "reply.status", status, "final"),
            source=self.source,
            subject=reply.customer_id,
        )
        records.append(
            Record(topics.CUSTOMER_EVENTS, reply.customer_id.encode(), status_event.to_json())
        )
        await self._publish(records)
        REPLIES.labels(status).inc()
        if error:
            log.warning("webchat.reply_failed reply=%s error=%s", reply.reply_id, error)
        return status

    async def _publish(self, records: list[Record]) -> None:
        delay = 0.5
        while True:  # Kafka down: keep the reply (offset not committed) and wait
            try:
                await self.publisher.publish(records)
                return
            except Exception as exc:  # KafkaError and timeouts: retry, never drop
                log.warning("webchat.publish_retry error=%s delay=%.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _dead(self, value: bytes, partition: int, offset: int, error: str) -> None:
        log.warning(
            "webchat.deadletter topic=%s partition=%d offset=%d error=%s",
            OUTBOUND_TOPIC,
            partition,
            offset,
            error[:300],
        )
        src = self.source
        dead = dead_letter("webchat.send", error, OUTBOUND_TOPIC, partition, offset, value, src)
        await self._publish([dead])
        REPLIES.labels("deadletter").inc()


class LiveFanout(OutboundConsumer):
    """Pushes replies and agent typing to the tabs of this process, from the topic's end."""

    name = "webchat-fanout"

    def __init__(self, connector: WebchatConnector, settings: Settings) -> None:
        super().__init__(settings)
        self.connector = connector

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            client_id=f"omnihub-{self.name}",
        )
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(OUTBOUND_TOPIC)
        if not partitions:
            await self.consumer.topics()  # metadata of a topic not asked for yet
            partitions = self.consumer.partitions_for_topic(OUTBOUND_TOPIC) or set()
        if not partitions:
            raise KafkaError(f"topic {OUTBOUND_TOPIC} does not exist: run `omnihub init`")
        assigned = [TopicPartition(OUTBOUND_TOPIC, p) for p in sorted(partitions)]
        self.consumer.assign(assigned)
        await self.consumer.seek_to_end(*assigned)
        self.run(self._run())

    async def _run(self) -> None:
        assert self.consumer is not None
        while True:
            batch = await self.consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batch.values():
                for record in records:
                    self.handle(record.value)

    def handle(self, value: bytes | None) -> int:
        """Push one outbound event to the local tabs; returns how many tabs it reached."""
        try:
            event = c.parse_event(value or b"")
        except c.ContractError:
            return 0  # the recorder dead-letters it
        if event.type == c.REPLY_REQUESTED and event.data.channel == "webchat":
            reached = self.connector.deliver_reply(event.data, event_ids(event.data))
            PUSHED.labels("reply").inc(reached)
            return reached
        if event.type == c.CONVERSATION_TYPING and event.data.who == "agent":
            reached = self.connector.deliver_typing(event.data)
            PUSHED.labels("typing").inc(reached)
            return reached
        return 0
