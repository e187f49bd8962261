"""Outbound email: agent replies (``omnihub.outbound.email.v1``) sent over SMTP in-thread.

For each ``reply.requested`` event the sender builds the mail from the inbox address with a
deterministic ``Message-ID`` and correct ``In-Reply-To``/``References``, hands it to the inbox's
relay, and — once the relay accepted it — publishes the sent copy on the inbound topic
(``direction="out"``, so it lands on the customer's timeline) and a ``reply.status`` on the
customer-event stream. Only then is the offset committed. 4xx answers and connection errors
are retried with backoff (status ``retrying``); 5xx answers fail at once (status ``failed``,
with the relay's reason for the agent). A relay acceptance is written to the outbox first,
so a replay after a crash republishes but never mails the customer twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import smtplib
import ssl
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, formataddr
from typing import Any

from prometheus_client import Counter
from pymongo.errors import PyMongoError

from connectors.base import OutboundConsumer, inbound_key
from connectors.email.config import Inbox, SmtpRelay
from connectors.email.service import EmailConnector
from hub.settings import Settings
from pipeline import contract as c
from pipeline import topics
from pipeline.publish import Publisher, Record, dead_letter
from store import blobs, outbox
from store.mongo import Store
from unify.identifiers import mask

log = logging.getLogger("omnihub.email.send")

OUTBOUND_TOPIC = topics.outbound("email")
NO_RELAY = "no outbound SMTP relay configured"
REPLIES = Counter("omnihub_email_replies_total", "agent replies handled", ["status"])


class TransientSendError(Exception):
    """The relay may accept later (4xx, connection refused, timeout)."""


class PermanentSendError(Exception):
    """The relay refused for good (5xx), or omnihub is not configured to send."""


def message_id_for(reply: c.Reply, inbox: Inbox) -> str:
    """Deterministic: a retried or replayed reply keeps its Message-ID (one timeline entry)."""
    token = re.sub(r"[^A-Za-z0-9._-]", "", reply.reply_id)[:64]
    digest = hashlib.sha256(reply.reply_id.encode()).hexdigest()[:12]
    return f"omnihub.{token or 'reply'}.{digest}@{inbox.domain}"


def recipients(reply: c.Reply) -> list[str]:
    out = []
    for to in reply.to:
        kind, _, value = to.partition(":")
        if kind != "email" or "@" not in value:
            raise PermanentSendError(f"recipient of kind {kind!r} cannot be mailed")
        out.append(value)
    return out


def thread_ids(reply: c.Reply) -> tuple[str | None, list[str]]:
    """In-Reply-To and References of the reply: the thread root first, the answered id last."""
    refs = [r for r in reply.references if r]
    if reply.thread and not reply.thread.startswith("sha256:") and reply.thread not in refs:
        refs.insert(0, reply.thread)
    if reply.in_reply_to and (not refs or refs[-1] != reply.in_reply_to):
        refs = [r for r in refs if r != reply.in_reply_to] + [reply.in_reply_to]
    return reply.in_reply_to, refs[-100:] if len(refs) <= 100 else [refs[0], *refs[-99:]]


def build_mime(
    reply: c.Reply, inbox: Inbox, message_id: str, attachments: list[tuple[c.Attachment, bytes]]
) -> EmailMessage:
    mail = EmailMessage(policy=SMTP_POLICY)
    mail["From"] = formataddr((inbox.team or "", inbox.address)) if inbox.team else inbox.address
    mail["To"] = ", ".join(recipients(reply))
    mail["Subject"] = reply.subject or ""
    mail["Date"] = format_datetime(reply.requested_at)
    mail["Message-ID"] = f"<{message_id}>"
    in_reply_to, refs = thread_ids(reply)
    if in_reply_to:
        mail["In-Reply-To"] = f"<{in_reply_to}>"
    if refs:
        mail["References"] = " ".join(f"<{r}>" for r in refs)
    mail["X-Omnihub-Reply-Id"] = reply.reply_id
    mail.set_content(reply.text)
    if reply.html:
        mail.add_alternative(reply.html, subtype="html")
    for att, data in attachments:
        main, _, sub = att.type.partition("/")
        mail.add_attachment(
            data, maintype=main or "application", subtype=sub or "octet-stream", filename=att.name
        )
    return mail


def deliver(relay: SmtpRelay, hostname: str, sender: str, rcpts: list[str], data: bytes) -> None:
    """One SMTP transaction with the relay (blocking; run it in a thread)."""
    options = ["SMTPUTF8"] if not data.isascii() or not all(r.isascii() for r in rcpts) else []
    try:
        smtp_cls = smtplib.SMTP_SSL if relay.ssl else smtplib.SMTP
        kwargs: dict[str, Any] = {"local_hostname": hostname, "timeout": relay.timeout}
        if relay.ssl:
            kwargs["context"] = ssl.create_default_context()
        with smtp_cls(relay.host, relay.port, **kwargs) as smtp:
            smtp.ehlo()
            if relay.starttls and not relay.ssl:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if relay.username:
                smtp.login(relay.username, relay.password() or "")
            if options and not smtp.has_extn("smtputf8"):
                options = []
            refused = smtp.sendmail(sender, rcpts, data, mail_options=options)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(
            f"{code} {msg.decode(errors='replace')}" for code, msg in exc.recipients.values()
        )
        if all(400 <= code < 500 for code in codes):
            raise TransientSendError(f"recipient deferred: {detail}") from None
        raise PermanentSendError(f"recipient refused: {detail}") from None
    except smtplib.SMTPResponseException as exc:
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else (str(exc.smtp_error))
        )
        if 400 <= exc.smtp_code < 500:
            raise TransientSendError(f"{exc.smtp_code} {text}") from None
        raise PermanentSendError(f"{exc.smtp_code} {text}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise TransientSendError(f"{type(exc).__name__}: {exc}") from None
    if refused:
        detail = "; ".join(
            f"{code} {msg.decode(errors='replace')}" for code, msg in refused.values()
        )
        raise PermanentSendError(f"some recipients refused: {detail}")


class ReplySender(OutboundConsumer):
    """Consumes the email outbound topic with its own group; commits after each reply."""

    name = "email-send"

    def __init__(
        self, connector: EmailConnector, publisher: Publisher, store: Store, settings: Settings
    ) -> None:
        super().__init__(settings)
        self.connector = connector
        self.publisher = publisher
        self.store = store
        self.source = connector.source

    async def start(self) -> None:
        self.consumer = self.group_consumer(OUTBOUND_TOPIC, self.settings.email_outbound_group)
        await self.consumer.start()
        self.run(self.commit_each(self.handle, max_records=50))

    # ------------------------------------------------------------------ one reply
    async def handle(self, value: bytes, partition: int = 0, offset: int = 0) -> str:
        """Deliver one reply event; returns the final status. Retries until it is final."""
        try:
            reply: c.Reply = c.parse_event(value, expect=c.REPLY_REQUESTED).data
        except c.ContractError as exc:
            await self._dead(value, partition, offset, str(exc))
            return "failed"
        inbox = self.connector.inboxes.get(reply.account.strip().lower())
        if inbox is None:
            return await self._final(reply, "failed", None, f"no inbox {reply.account} here")
        message_id = message_id_for(reply, inbox)
        if await self._retrying_store(lambda: outbox.sent(self.store, reply.reply_id)) is None:
            error = await self._send(reply, inbox, message_id)
            if error is not None:
                await self._retrying_store(
                    lambda: outbox.mark_failed(self.store, reply.reply_id, error)
                )
                return await self._final(reply, "failed", None, error)
            await self._retrying_store(
                lambda: outbox.mark_sent(self.store, reply.reply_id, message_id)
            )
        return await self._final(reply, "sent", message_id, None, inbox=inbox)

    async def _send(self, reply: c.Reply, inbox: Inbox, message_id: str) -> str | None:
        """None once the relay accepted; else the reason it failed for good."""
        if inbox.smtp is None:
            return NO_RELAY
        try:
            attachments = [(a, await self._blob(a)) for a in reply.attachments]
            mime = build_mime(reply, inbox, message_id, attachments).as_bytes()
            rcpts = recipients(reply)
        except PermanentSendError as exc:
            return str(exc)
        started = time.monotonic()
        delay, attempt = 1.0, 0
        while True:
            attempt += 1
            try:
                await asyncio.to_thread(
                    deliver, inbox.smtp, self.settings.email_hostname, inbox.address, rcpts, mime
                )
                log.info(
                    "email.reply_sent reply=%s to=%s attempt=%d",
                    reply.reply_id,
                    mask(f"email:{rcpts[0]}"),
                    attempt,
                )
                return None
            except PermanentSendError as exc:
                return str(exc)
            except TransientSendError as exc:
                if time.monotonic() - started + delay > self.settings.email_send_give_up:
                    return f"gave up after {attempt} attempts: {exc}"
                log.warning(
                    "email.reply_retry reply=%s attempt=%d delay=%.0fs error=%s",
                    reply.reply_id,
                    attempt,
                    delay,
                    exc,
                )
                await self._status(reply, "retrying", None, str(exc), str(attempt))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.email_send_retry_max)

    async def _blob(self, att: c.Attachment) -> bytes:
        data = await blobs.get(self.store, att.ref)
        if data is None:
            raise PermanentSendError(f"attachment {att.name!r} is not in GridFS")
        return data

    async def _retrying_store(self, step: Callable[[], Awaitable[Any]]) -> Any:
        # A store outage must not turn into a lost or doubled reply: wait it out.
        delay = 0.5
        while True:
            try:
                return await step()
            except PyMongoError as exc:
                log.warning("email.store_retry error=%s delay=%.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # ------------------------------------------------------------------ events
    def _status_record(
        self, reply: c.Reply, status: str, source_id: str | None, error: str | None, n: str
    ) -> Record:
        data = c.ReplyStatus(
            reply_id=reply.reply_id,
            conversation_id=reply.conversation_id,
            customer_id=reply.customer_id,
            channel="email",
            status=status,  # type: ignore[arg-type]
            source_id=source_id,
            error=error[:2000] if error else None,
            at=c.utcnow(),
        )
        event = c.envelope(
            c.REPLY_STATUS,
            data,
            id=c.deterministic_id(reply.reply_id, "reply.status", status, n),
            source=self.source,
            subject=reply.customer_id,
        )
        return Record(topics.CUSTOMER_EVENTS, reply.customer_id.encode(), event.to_json())

    async def _status(
        self, reply: c.Reply, status: str, source_id: str | None, error: str | None, n: str = ""
    ) -> None:
        await self._publish([self._status_record(reply, status, source_id, error, n)])

    async def _final(
        self,
        reply: c.Reply,
        status: str,
        message_id: str | None,
        error: str | None,
        inbox: Inbox | None = None,
    ) -> str:
        records = []
        if status == "sent" and inbox is not None and message_id is not None:
            copy = self._sent_copy(reply, inbox, message_id)
            event = c.message_event(copy, source=self.source)
            records.append(Record(topics.INBOUND, inbound_key(copy), event.to_json()))
        records.append(self._status_record(reply, status, message_id, error, "final"))
        await self._publish(records)
        REPLIES.labels(status).inc()
        if status == "failed":
            log.warning("email.reply_failed reply=%s error=%s", reply.reply_id, error)
        return status

    def _sent_copy(self, reply: c.Reply, inbox: Inbox, message_id: str) -> c.Message:
        # The customer's address is the "sender" identifier: ingest resolves the timeline by it.
        in_reply_to, refs = thread_ids(reply)
        return c.Message(
            channel="email",
            direction="out",
            account=inbox.address,
            source_id=message_id,
            sender=[c.Identifier(kind="email", value=recipients(reply)[0])],
            display_name=None,
            thread=reply.thread,
            occurred_at=c.utcnow(),
            subject=reply.subject,
            text=reply.text,
            html=reply.html,
            attachments=list(reply.attachments),
            in_reply_to=in_reply_to,
            references=refs,
        )

    async def _publish(self, records: list[Record]) -> None:
        delay = 0.5
        while True:  # Kafka down: keep the reply (offset not committed) and wait
            try:
                await self.publisher.publish(records)
                return
            except Exception as exc:  # KafkaError and timeouts: retry, never drop
                log.warning("email.publish_retry error=%s delay=%.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _dead(self, value: bytes, partition: int, offset: int, error: str) -> None:
        src = self.source
        dead = dead_letter("email.send", error, OUTBOUND_TOPIC, partition, offset, value, src)
        await self._publish([dead])
