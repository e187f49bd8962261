"""Inbound SMTP: a real Postfix relays to omnihub's aiosmtpd, which answers 250 only after
Kafka acknowledged — and 451 while Kafka is down, so that Postfix keeps the mail and retries."""

from __future__ import annotations

import asyncio
import base64
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from connectors.email.service import EmailConnector
from hub.bootstrap import create_topics
from hub.supervisor import tail
from pipeline import contract as c
from pipeline import topics
from store import blobs
from tests.integration.email_support import (
    INBOX,
    Env,
    TopicReader,
    close_env,
    connector,
    data_of,
    make_env,
    settle,
    tansu_on,
    until,
    wait_count,
    worker,
)
from tests.peers import DaemonPeer, postfix_trail, start_postfix

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[1] / "unit" / "connectors" / "email" / "fixtures"


@pytest.fixture
async def env(tmp_path: Path, mongo_url: str) -> AsyncIterator[Env]:
    e = await make_env(tmp_path, mongo_url, email_max_message_bytes=2_000_000)
    yield e
    await close_env(e)


@pytest.fixture
async def smtp(env: Env) -> AsyncIterator[EmailConnector]:
    conn = EmailConnector(env.publisher, env.store, env.settings, _inboxes(env))
    conn.ack_timeout = 3.0
    await conn.start_smtp("127.0.0.1", env.settings.email_smtp_port)
    yield conn
    await conn.stop()


@pytest.fixture
def postfix(env: Env, tmp_path: Path) -> AsyncIterator[DaemonPeer]:  # type: ignore[misc]
    peer = start_postfix(tmp_path, env.settings.email_smtp_port)
    yield peer
    peer.stop()


def _inboxes(env: Env) -> list:  # type: ignore[type-arg]
    from connectors.email.service import configured_inboxes

    return configured_inboxes(env.settings)


def mail(n: int, to: str = INBOX, sender: str = "customer@example.com", body: str = "") -> bytes:
    m = EmailMessage(policy=SMTP)
    m["From"] = f"Customer {n} <{sender}>"
    m["To"] = to
    m["Subject"] = f"سفارش {n}"
    m["Message-ID"] = f"<m-{n}@example.com>"
    m.set_content(body or f"message number {n}")
    return m.as_bytes()


async def send(port: int, messages: list[tuple[str, list[str], bytes]], utf8: bool = False) -> None:
    def go() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            for sender, rcpts, data in messages:
                s.sendmail(sender, rcpts, data, mail_options=["SMTPUTF8"] if utf8 else [])

    await asyncio.to_thread(go)


async def test_postfix_relays_real_mail_which_lands_on_kafka_with_blobs_in_gridfs(
    env: Env, smtp: EmailConnector, postfix: DaemonPeer
) -> None:
    persian = (FIXTURES / "persian_multipart.eml").read_bytes()
    utf8 = (FIXTURES / "smtputf8.eml").read_bytes()
    async with TopicReader(env.bootstrap, topics.INBOUND) as inbound:
        await send(
            postfix.port,
            [
                ("ali.rezaei@example.ir", [INBOX.upper()], persian),
                ("nobody@example.com", ["not-an-inbox@shop.example.com"], mail(9)),
            ],
        )
        await send(postfix.port, [("علی@مثال.example", [INBOX], utf8)], utf8=True)
        records = await inbound.wait(lambda r: len(r) >= 2, 20, "two messages via Postfix")
    by_id = {m["source_id"]: m for m in data_of(records, c.MESSAGE_RECEIVED)}
    assert set(by_id) == {"persian-1@example.ir", "utf8-1@xn--mgbh0fb.example"}
    fa = c.Message.model_validate(by_id["persian-1@example.ir"])
    assert fa.account == INBOX and fa.subject == "سلام، سفارش من کجاست؟ #1234"
    assert fa.sender[0].value == "ali.rezaei@example.ir"
    pdf = next(a for a in fa.attachments if a.type == "application/pdf")
    assert (await blobs.get(env.store, pdf.ref)) is not None
    assert by_id["utf8-1@xn--mgbh0fb.example"]["sender"][0]["value"] == "علی@مثال.example"
    # the unknown recipient was refused at RCPT: Postfix says so in its log, nothing published
    await until(lambda: "not an omnihub inbox" in postfix.log.read_text(), 10, "the 550 in maillog")


async def test_smtp_limits_unknown_recipients_and_dead_letters(
    env: Env, smtp: EmailConnector
) -> None:
    port = env.settings.email_smtp_port

    def session() -> None:  # blocking client in a thread: the server runs on this loop
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.ehlo()
            assert s.has_extn("smtputf8") and int(s.esmtp_features["size"]) == 2_000_000
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                s.sendmail("a@example.com", ["someone@else.example"], mail(1))
            assert refused.value.recipients["someone@else.example"][0] == 550
            with pytest.raises(smtplib.SMTPSenderRefused) as big:
                s.sendmail("a@example.com", [INBOX], mail(2, body="x" * 3_000_000))
            assert big.value.smtp_code == 552
            raw = (FIXTURES / "no_sender.eml").read_bytes()
            assert s.sendmail("", [INBOX], raw) == {}  # 250: kept raw, dead-lettered

    await asyncio.to_thread(session)
    async with TopicReader(env.bootstrap, topics.DEADLETTER) as dead:
        (letter,) = data_of(await dead.wait(lambda r: len(r) >= 1, 10, "a dead letter"))
    assert letter["stage"] == "email.parse" and "sender" in letter["error"]
    sha = letter["error"].rsplit("id ", 1)[1]
    kept = await blobs.get(env.store, sha, blobs.RAW_MAIL)
    assert kept is not None and b"nobody sent this" in kept
    assert base64.b64decode(letter["value_b64"]) == kept[:4096]


async def test_kafka_down_means_451_and_postfix_delivers_once_it_is_back(
    env: Env, smtp: EmailConnector, postfix: DaemonPeer, tmp_path: Path
) -> None:
    port = env.broker.port
    env.broker.stop()
    with pytest.raises(smtplib.SMTPDataError) as tempfail:
        await send(env.settings.email_smtp_port, [("customer@example.com", [INBOX], mail(1))])
    assert tempfail.value.smtp_code == 451
    await send(postfix.port, [("customer@example.com", [INBOX], mail(2))])
    await until(lambda: "451 4.3.0" in postfix.log.read_text(), 20, "Postfix deferring on 451")
    env.broker = tansu_on(tmp_path, port)
    await create_topics(env.settings)
    async with TopicReader(env.bootstrap, topics.INBOUND) as inbound:
        records = await inbound.wait(
            lambda r: "m-2@example.com" in {m["source_id"] for m in data_of(r)},
            30,
            "the mail Postfix deferred",
        )
    # m-1 got a 451 (its sender must retry); its produce may still have completed once the
    # broker was back: at-least-once, and the same event id, so the timeline dedupes it.
    assert {m["source_id"] for m in data_of(records)} <= {"m-1@example.com", "m-2@example.com"}
    await until(lambda: "status=sent" in postfix.log.read_text(), 10, "Postfix: status=sent")


async def test_kill_9_while_postfix_delivers_500_then_restart_each_stored_once(
    env: Env, postfix: DaemonPeer, tmp_path: Path
) -> None:
    n = 500
    work = worker(env, tmp_path / "worker.log")
    conn = connector(env, tmp_path / "connector.log")
    try:
        batch = [
            ("customer@example.com", [INBOX], mail(i, sender=f"c{i % 50}@example.com"))
            for i in range(n)
        ]
        flow = asyncio.gather(*(send(postfix.port, batch[k::4]) for k in range(4)))
        stored = await wait_count(env.store, 40, 60)
        conn.kill9()
        assert stored < n, "everything was stored before the kill; raise n"
        await flow
        conn = connector(env, tmp_path / "connector.log")
        stored = await wait_count(env.store, n, 120)
        ids = {d["_id"] async for d in env.store.interactions.find({}, {"_id": 1})}
        missing = [
            f"m-{i}@example.com"
            for i in range(n)
            if c.message_event_id("email", INBOX, f"m-{i}@example.com") not in ids
        ]
        if stored < n:  # say where the missing mail got to: Postfix's trail, both logs
            pytest.fail(
                f"{stored} of {n} stored after 120 s; missing {missing[:10]}\n"
                f"{postfix_trail(postfix.log, missing[:10])}\n"
                f"connector log:\n{tail(tmp_path / 'connector.log', 30)}\n"
                f"worker log:\n{tail(tmp_path / 'worker.log', 30)}"
            )
        assert await settle(env.store) == n
        assert not missing
    finally:
        conn.stop()
        work.stop()
    log = (tmp_path / "connector.log").read_text()
    assert "customer@example.com" not in log  # addresses are masked in logs


async def test_the_ugly_corpus_is_recorded_or_dead_lettered_and_nothing_is_lost(
    env: Env, smtp: EmailConnector
) -> None:
    big = EmailMessage(policy=SMTP)
    big["From"] = "big@example.com"
    big["Message-ID"] = "<big-10mb@example.com>"
    big.set_content("the attachment")
    big.add_attachment(
        b"\x07" * 10 * 1024 * 1024, maintype="application", subtype="zip", filename="scan.zip"
    )
    giant = b"From: g@example.com\r\nMessage-ID: <giant@example.com>\r\n\r\n" + b"y" * 900_000
    corpus = {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.eml"))}
    corpus |= {"big.eml": big.as_bytes(), "giant.eml": giant + b"\r\n"}
    port = env.settings.email_smtp_port

    def deliver_all() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            for raw in corpus.values():
                s.sendmail("", [INBOX], raw)  # every one answered 250

    async with (
        TopicReader(env.bootstrap, topics.INBOUND) as inbound,
        TopicReader(env.bootstrap, topics.DEADLETTER) as dead,
    ):
        # the message size limit is 2 MB in this file: raise it for the 10 MB attachment
        await smtp.stop()
        smtp.settings = env.settings.model_copy(update={"email_max_message_bytes": 20 << 20})
        await smtp.start_smtp("127.0.0.1", port)
        await asyncio.to_thread(deliver_all)
        await inbound.wait(lambda r: len(r) + len(dead.records) >= len(corpus), 30, "all mail")
    recorded = data_of(inbound.records, c.MESSAGE_RECEIVED)
    assert len(recorded) + len(dead.records) == len(corpus)
    assert [d["data"]["stage"] for d in dead.records] == ["email.parse"]  # no_sender.eml
    ids = {m["source_id"] for m in recorded}
    assert "same-id@example.com" in ids and any(i.startswith("same-id@example.com#") for i in ids)
    kinds = {m["source_id"]: m["kind"] for m in recorded}
    assert kinds["oof-1@example.net"] == "auto_reply" and kinds["loop-1@example.com"] == "loop"
    assert kinds["20260302081500.ABC12@mta.test"] == "bounce"
    (scan,) = next(m for m in recorded if m["source_id"] == "big-10mb@example.com")["attachments"]
    assert scan["size"] == 10 * 1024 * 1024 and scan["omitted"] is None
    assert await blobs.exists(env.store, scan["sha256"])
