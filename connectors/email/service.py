"""I/O of the email channel: the inbound SMTP server, IMAP watchers and the reply sender.

Inbound SMTP (aiosmtpd) is the final hop a real MTA relays to. It answers ``250`` only after
Kafka acknowledged the message (and its attachments are in GridFS), ``451`` when Kafka or
MongoDB is unavailable so that the MTA keeps the mail and retries. Mail that cannot become a
Message is kept raw in GridFS and dead-lettered — and still answered ``250``: it is safe.
IMAP mailboxes (:mod:`connectors.email.imap`) and replies (:mod:`connectors.email.send`) go
through the same :meth:`EmailConnector.accept`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pymongo.errors import PyMongoError

from connectors.base import Connector
from connectors.email.config import ConfigError, Inbox, load_inboxes
from connectors.email.parse import ParsedMail, Unparseable, parse_mail
from connectors.errors import UpstreamUnavailable
from hub.heap import freeze_startup
from hub.settings import Settings
from pipeline import contract as c
from pipeline import topics
from pipeline.publish import KafkaPublisher, Publisher, Record
from store import blobs, mail_ids
from store.mongo import Store, connect, ensure_indexes, wait_ready
from unify.identifiers import mask

log = logging.getLogger("omnihub.email")

MAILS = Counter(
    "omnihub_email_messages_total", "mail handled by the email connector", ["via", "outcome"]
)
ACCEPT_SECONDS = Histogram(
    "omnihub_email_accept_seconds",
    "parse + store + Kafka ack of one delivery",
    ["via"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEADLETTER_EXCERPT = 4096


@dataclass(frozen=True)
class RawMail:
    """One mail as a peer handed it over, for one inbox."""

    raw: bytes
    account: str
    received_at: datetime
    via: str  # "smtp" or "imap:<mailbox>"
    envelope_from: str | None = None


class EmailConnector(Connector):
    channel = "email"

    def __init__(
        self,
        publisher: Publisher,
        store: Store,
        settings: Settings,
        inboxes: Sequence[Inbox],
    ) -> None:
        super().__init__(publisher)
        self.store = store
        self.settings = settings
        self.inboxes = {i.address: i for i in inboxes}
        self.ack_timeout = 15.0
        self._ids = _IdRegistry(store)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[Any] = []

    # ------------------------------------------------------------------ accepting mail
    async def accept(self, mails: Sequence[RawMail]) -> list[str]:
        """Parse, store blobs, publish; returns event ids once Kafka acknowledged everything.

        Raises :class:`UpstreamUnavailable` when Kafka or MongoDB did not acknowledge: the
        caller must not acknowledge its peer (SMTP 451, IMAP checkpoint not advanced).
        """
        parsed: list[tuple[RawMail, ParsedMail]] = []
        dead: list[tuple[RawMail, str]] = []
        for mail in mails:
            try:
                parsed.append(
                    (
                        mail,
                        parse_mail(
                            mail.raw,
                            account=mail.account,
                            received_at=mail.received_at,
                            envelope_from=mail.envelope_from,
                            max_attachment_bytes=self.settings.email_max_attachment_bytes,
                        ),
                    )
                )
            except Unparseable as exc:
                dead.append((mail, str(exc)))
            except Exception as exc:  # a parser bug must not lose mail: keep it raw, go on
                log.exception("email.parse_bug account=%s", mask(f"email:{mail.account}"))
                dead.append((mail, f"parser error {type(exc).__name__}"))
        try:
            messages = await self._store_and_identify(parsed)
            records = [self._dead_record(m, why, sha) for m, why, sha in await self._keep(dead)]
            ids = await asyncio.wait_for(self._publish(messages, records), self.ack_timeout)
        except (PyMongoError, TimeoutError) as exc:
            for mail in mails:
                MAILS.labels(_via(mail), "tempfail").inc()
            raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except UpstreamUnavailable:
            for mail in mails:
                MAILS.labels(_via(mail), "tempfail").inc()
            raise
        for mail, p in parsed:
            MAILS.labels(_via(mail), p.message.kind).inc()
            log.info(
                "email.accepted via=%s account=%s from=%s kind=%s attachments=%d",
                mail.via,
                mask(f"email:{mail.account}"),
                mask(f"email:{p.message.sender[0].value}"),
                p.message.kind,
                len(p.message.attachments),
            )
        for mail, why in dead:
            MAILS.labels(_via(mail), "deadletter").inc()
            log.warning(
                "email.deadletter via=%s account=%s error=%s",
                mail.via,
                mask(f"email:{mail.account}"),
                why,
            )
        return ids

    async def _store_and_identify(
        self, parsed: list[tuple[RawMail, ParsedMail]]
    ) -> list[c.Message]:
        for mail, p in parsed:
            for sha, data in p.blobs.items():
                await blobs.put(self.store, data, sha256=sha, metadata={"account": mail.account})
            if p.keep_raw:
                await blobs.put(
                    self.store,
                    mail.raw,
                    bucket=blobs.RAW_MAIL,
                    sha256=p.raw_sha256,
                    metadata={"account": mail.account, "why": "attachment omitted"},
                )
        with_ids = [(m, p) for m, p in parsed if p.message_id]
        source_ids = await self._ids.resolve(
            [(p.message.account, p.message_id or "", p.fingerprint) for _, p in with_ids]
        )
        renamed = {
            id(p): sid
            for (_, p), sid in zip(with_ids, source_ids, strict=True)
            if sid != p.message.source_id
        }
        out = []
        for _, p in parsed:
            m = p.message
            if id(p) in renamed:
                # a different mail reusing a known Message-ID: its own event, same thread
                m = m.model_copy(update={"source_id": renamed[id(p)]})
            out.append(m)
        return out

    async def _keep(self, dead: list[tuple[RawMail, str]]) -> list[tuple[RawMail, str, str]]:
        kept = []
        for mail, why in dead:
            sha = await blobs.put(
                self.store,
                mail.raw,
                bucket=blobs.RAW_MAIL,
                metadata={"account": mail.account, "via": mail.via, "error": why[:500]},
            )
            kept.append((mail, why, sha))
        return kept

    def _dead_record(self, mail: RawMail, why: str, sha: str) -> Record:
        letter = c.DeadLetter(
            stage="email.parse",
            error=f"{why}; raw mail kept in GridFS bucket {blobs.RAW_MAIL}, id {sha}"[:2000],
            topic=f"email:{mail.via}:{mail.account}",
            partition=0,
            offset=0,
            value_b64=base64.b64encode(mail.raw[:DEADLETTER_EXCERPT]).decode(),
            failed_at=c.utcnow(),
        )
        event = c.envelope(
            c.MESSAGE_DEADLETTERED,
            letter,
            id=c.deterministic_id("email", mail.account, sha, "dead"),
            source=self.source,
            subject=f"raw_mail/{sha}",
        )
        return Record(topics.DEADLETTER, mail.account.encode(), event.to_json())

    async def _publish(self, messages: list[c.Message], extra: list[Record]) -> list[str]:
        if extra:
            try:
                await self.publisher.publish(extra)
            except Exception as exc:  # KafkaError and its kin: the peer must retry
                raise UpstreamUnavailable(f"Kafka did not acknowledge: {exc}") from exc
        return await self.submit(messages) if messages else []

    # ------------------------------------------------------------------ SMTP server
    async def start_smtp(self, host: str, port: int) -> None:
        handler = SmtpHandler(self)
        s = self.settings
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            return _LenientSMTP(
                handler,
                data_size_limit=s.email_max_message_bytes,
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname=s.email_hostname,
                ident="omnihub ESMTP",
                timeout=300,
                loop=loop,
            )

        self._server = await loop.create_server(factory, host=host, port=port)
        log.info("email.smtp_listening addr=%s:%d inboxes=%d", host, port, len(self.inboxes))

    async def start(self) -> None:
        await self.start_smtp(self.settings.host, self.settings.email_smtp_port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 3)
            self._server = None


class _IdRegistry:
    """Coalesces concurrent Message-ID registry look-ups into one round trip.

    Each SMTP delivery needs one; MongoDB answers a batch about as fast as a single one, so
    while one batch is in flight the next deliveries queue up and go together.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: list[tuple[list[tuple[str, str, str]], asyncio.Future[list[str]]]] = []
        self._draining = False

    async def resolve(self, entries: list[tuple[str, str, str]]) -> list[str]:
        if not entries:
            return []
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._queue.append((entries, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                flat = [e for entries, _ in batch for e in entries]
                try:
                    result = await mail_ids.resolve(self.store, flat)
                except Exception as exc:  # handed to every waiter: each answers 451 / retries
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                i = 0
                for entries, fut in batch:
                    if not fut.done():
                        fut.set_result(result[i : i + len(entries)])
                    i += len(entries)
        finally:
            self._draining = False


class _LenientSMTP(SMTP):
    """RFC 5321 caps lines at 1000 octets, but real mail breaks that (generated HTML on one
    line); refusing it would lose the mail at the last hop. Accept lines up to 1 MiB."""

    line_length_limit = 1 << 20


def _via(mail: RawMail) -> str:
    return mail.via.split(":", 1)[0]


class SmtpHandler:
    """aiosmtpd hooks: recipients must be configured inboxes; DATA is acked after Kafka."""

    def __init__(self, connector: EmailConnector) -> None:
        self.connector = connector

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.strip().lower() not in self.connector.inboxes:
            MAILS.labels("smtp", "rejected_rcpt").inc()
            return "550 5.1.1 Recipient address rejected: not an omnihub inbox"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        accounts = sorted({r.strip().lower() for r in envelope.rcpt_tos})
        now = c.utcnow()
        sender = envelope.mail_from if envelope.mail_from not in (None, "", "<>") else None
        mails = [RawMail(raw or b"", acc, now, "smtp", sender) for acc in accounts]
        with ACCEPT_SECONDS.labels("smtp").time():
            try:
                await self.connector.accept(mails)
            except UpstreamUnavailable as exc:
                log.warning("email.smtp_tempfail error=%s", exc)
                return "451 4.3.0 omnihub cannot store mail right now, try again later"
        return "250 2.0.0 OK: queued in omnihub"


# ---------------------------------------------------------------------------- the process
async def _health(settings: Settings) -> web.AppRunner | None:
    if settings.email_health_port is None:
        return None

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": "email"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.email_health_port).start()
    return runner


def configured_inboxes(settings: Settings) -> list[Inbox]:
    return load_inboxes(
        inline=settings.email_inboxes,
        path=settings.email_inboxes_file,
        default_address=settings.email_address,
    )


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """`omnihub connector email`: SMTP in, IMAP watchers, replies out, until SIGTERM."""
    from connectors.email.imap import MailboxWatcher
    from connectors.email.send import ReplySender

    inboxes = configured_inboxes(settings)
    # aiosmtpd logs whole SMTP dialogues (addresses) at INFO: keep them out of the logs
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = connect(settings.mongo_url, settings.mongo_db)
    await wait_ready(store, settings.ready_timeout)
    await ensure_indexes(store)
    publisher = KafkaPublisher(
        settings.bootstrap, idempotence=settings.idempotence, client_id="omnihub-email"
    )
    await publisher.start()
    connector = EmailConnector(publisher, store, settings, inboxes)
    sender = ReplySender(connector, publisher, store, settings)
    watchers = [
        MailboxWatcher(connector, inbox, mailbox, loop)
        for inbox in inboxes
        if inbox.imap is not None
        for mailbox in inbox.imap.mailboxes
    ]
    sender.on_crash = stop.set
    health = await _health(settings)
    try:
        await sender.start()
        for w in watchers:
            w.start()
        freeze_startup()  # what start-up made lives on; before clients can connect
        await connector.start()
        log.info(
            "email.ready smtp=%s:%d imap_mailboxes=%d",
            settings.host,
            settings.email_smtp_port,
            len(watchers),
        )
        await stop.wait()
    finally:
        log.info("email.stopping")
        await connector.stop()
        for w in watchers:
            w.stop()
        await asyncio.gather(*(asyncio.to_thread(w.join, 5) for w in watchers))
        await sender.stop()
        if health is not None:
            await health.cleanup()
        await publisher.stop()
        await store.close()
    if sender.crashed:
        raise RuntimeError("the reply sender stopped on an error (see the log); restart me")


async def run_backfill(
    settings: Settings,
    mailbox: str,
    since: date,
    address: str | None = None,
    *,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> int:
    """`omnihub email backfill`: wire a connector (no servers) and run one backfill."""
    from connectors.email.imap import backfill

    with_imap = [i for i in configured_inboxes(settings) if i.imap is not None]
    if address is not None:
        with_imap = [i for i in with_imap if i.address == address.strip().lower()]
    if len(with_imap) != 1:
        names = ", ".join(i.address for i in with_imap) or "none"
        raise ConfigError(
            f"choose one inbox with IMAP settings with --inbox (configured with IMAP: {names})"
        )
    store = connect(settings.mongo_url, settings.mongo_db)
    await wait_ready(store, settings.ready_timeout)
    await ensure_indexes(store)
    publisher = KafkaPublisher(
        settings.bootstrap, idempotence=settings.idempotence, client_id="omnihub-email-backfill"
    )
    await publisher.start()
    try:
        connector = EmailConnector(publisher, store, settings, with_imap)
        return await backfill(connector, with_imap[0], mailbox, since, progress=progress)
    finally:
        await publisher.stop()
        await store.close()
