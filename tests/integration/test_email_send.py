"""Agent replies: sent through a real Postfix into a real Dovecot mailbox and read back over
IMAP, threaded so the customer's answer comes back to the same conversation; refusals and
an unreachable relay reach the agent as reply.status events."""

from __future__ import annotations

import asyncio
import email
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from connectors.email.parse import parse_mail
from connectors.email.send import NO_RELAY, ReplySender
from connectors.email.service import EmailConnector, configured_inboxes
from pipeline import contract as c
from pipeline import topics
from pipeline.publish import Record
from tests.integration.email_support import (
    INBOX,
    Env,
    TopicReader,
    close_env,
    data_of,
    make_env,
    until,
)
from tests.peers import DaemonPeer, free_port, start_dovecot, start_postfix

pytestmark = pytest.mark.integration
NO_RELAY_INBOX = "norelay@shop.example.com"
DOWN_INBOX = "down@shop.example.com"


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[DaemonPeer]:
    peer = start_dovecot(tmp_path)
    yield peer
    peer.stop()


@pytest.fixture
def postfix(tmp_path: Path, dovecot: DaemonPeer) -> Iterator[DaemonPeer]:
    peer = start_postfix(
        tmp_path,
        dovecot.ports["lmtp"],
        transport="lmtp",
        reject={"gone@example.com": "550 5.1.1 mailbox unavailable"},
    )
    yield peer
    peer.stop()


@pytest.fixture
async def sender(
    tmp_path: Path, mongo_url: str, postfix: DaemonPeer
) -> AsyncIterator[tuple[Env, ReplySender]]:
    relay = {"host": "127.0.0.1", "port": postfix.port, "starttls": False}
    inboxes = [
        {"address": INBOX, "team": "Shop Support", "smtp": relay},
        {"address": NO_RELAY_INBOX},
        {"address": DOWN_INBOX, "smtp": {**relay, "port": free_port(), "timeout": 2}},
    ]
    env = await make_env(
        tmp_path, mongo_url, inboxes, email_send_give_up=4.0, email_send_retry_max=1.0
    )
    conn = EmailConnector(env.publisher, env.store, env.settings, configured_inboxes(env.settings))
    reply_sender = ReplySender(conn, env.publisher, env.store, env.settings)
    await reply_sender.start()
    yield env, reply_sender
    await reply_sender.stop()
    await close_env(env)


def reply(n: int, account: str = INBOX, to: str = "customer@example.com", **kw: Any) -> c.Reply:
    return c.Reply(
        reply_id=f"r-{n}",
        conversation_id="conv-1",
        customer_id="cust-1",
        agent_id="agent-1",
        channel="email",
        account=account,
        thread="root-1@example.com",
        to=[f"email:{to}"],
        subject="Re: سفارش ۱۲۳۴",
        text="سلام، سفارش شما امروز ارسال شد.\nSara",
        in_reply_to="q-2@example.com",
        references=["root-1@example.com", "q-2@example.com"],
        requested_at=c.utcnow(),
        **kw,
    )


async def request(env: Env, *replies: c.Reply) -> None:
    records = [
        Record(
            topics.outbound("email"),
            r.conversation_id.encode(),
            c.envelope(c.REPLY_REQUESTED, r, id=r.reply_id, source="/test").to_json(),
        )
        for r in replies
    ]
    await env.publisher.publish(records)


def statuses(records: list[dict[str, Any]], reply_id: str) -> list[dict[str, Any]]:
    return [d for d in data_of(records, c.REPLY_STATUS) if d["reply_id"] == reply_id]


def fetch_customer_mail(dovecot: DaemonPeer) -> list[EmailMessage]:
    imap = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False, timeout=10)
    imap.login("customer", "s3cret")
    try:
        imap.select_folder("INBOX", readonly=True)
        data = imap.fetch(imap.search("ALL"), [b"BODY.PEEK[]"])
        return [
            email.message_from_bytes(d[b"BODY[]"], policy=default_policy)  # type: ignore[misc]
            for _, d in sorted(data.items())
        ]
    finally:
        imap.logout()


async def test_a_reply_reaches_the_customer_in_thread_and_lands_on_the_timeline(
    sender: tuple[Env, ReplySender], dovecot: DaemonPeer
) -> None:
    env, _ = sender
    async with (
        TopicReader(env.bootstrap, topics.CUSTOMER_EVENTS) as events,
        TopicReader(env.bootstrap, topics.INBOUND) as inbound,
    ):
        await request(env, reply(1))
        await events.wait(
            lambda r: any(s["status"] == "sent" for s in statuses(r, "r-1")),
            20,
            "reply.status sent",
        )
        (copy,) = data_of(await inbound.wait(lambda r: len(r) >= 1, 10, "the sent copy"))
        # the same request again (a replay after a crash before the offset commit): reported
        # and recorded again under the same ids, but never mailed to the customer twice
        await request(env, reply(1))
        await events.wait(lambda r: len(statuses(r, "r-1")) == 2, 20, "the replay's status")
        await inbound.wait(lambda r: len(r) == 2, 10, "the replay's copy")
    assert len({r["id"] for r in events.records}) == 1
    assert len({r["id"] for r in inbound.records}) == 1
    status = statuses(events.records, "r-1")[0]
    message_id = status["source_id"]
    assert message_id.endswith("@shop.example.com")
    assert copy["direction"] == "out" and copy["source_id"] == message_id
    assert copy["account"] == INBOX and copy["sender"][0]["value"] == "customer@example.com"
    assert copy["thread"] == "root-1@example.com" and copy["in_reply_to"] == "q-2@example.com"
    await until(lambda: bool(fetch_customer_mail(dovecot)), 10, "the mail in Dovecot")
    await asyncio.sleep(1.0)  # a second copy, if one had been sent, would have arrived by now
    (got,) = fetch_customer_mail(dovecot)
    assert got["Message-ID"] == f"<{message_id}>"
    assert got["In-Reply-To"] == "<q-2@example.com>"
    assert got["References"].split() == ["<root-1@example.com>", "<q-2@example.com>"]
    assert str(got["From"]) == f"Shop Support <{INBOX}>"
    assert got["Subject"] == "Re: سفارش ۱۲۳۴"
    assert got.get_body(("plain",)).get_content().startswith("سلام، سفارش شما")  # type: ignore[union-attr]
    # the customer answers from their mail client: it threads back to the same conversation
    answer = EmailMessage(policy=SMTP)
    answer["From"] = "customer@example.com"
    answer["To"] = INBOX
    answer["Subject"] = "Re: " + str(got["Subject"])
    answer["Message-ID"] = "<a-3@example.com>"
    answer["In-Reply-To"] = got["Message-ID"]
    answer["References"] = f"{got['References']} {got['Message-ID']}"
    answer.set_content("Thanks!\n\nOn Monday, Shop Support wrote:\n> سلام")
    m = parse_mail(answer.as_bytes(), account=INBOX, received_at=c.utcnow()).message
    assert m.thread == copy["thread"] and m.in_reply_to == message_id and m.text == "Thanks!"


async def test_refusals_and_missing_or_dead_relays_are_reported_to_the_agent(
    sender: tuple[Env, ReplySender],
) -> None:
    env, _ = sender
    async with TopicReader(env.bootstrap, topics.CUSTOMER_EVENTS) as events:
        await request(
            env,
            reply(2, to="gone@example.com"),
            reply(3, account=NO_RELAY_INBOX),
            reply(4, account=DOWN_INBOX),
        )

        def final(r: list[dict[str, Any]], rid: str) -> bool:
            return any(s["status"] == "failed" for s in statuses(r, rid))

        await events.wait(lambda r: all(final(r, f"r-{n}") for n in (2, 3, 4)), 30, "failures")
    gone = statuses(events.records, "r-2")
    assert gone[-1]["status"] == "failed" and "550" in gone[-1]["error"]
    assert statuses(events.records, "r-3")[-1]["error"] == NO_RELAY
    down = [s["status"] for s in statuses(events.records, "r-4")]
    assert down[0] == "retrying" and down[-1] == "failed"
    assert "gave up" in statuses(events.records, "r-4")[-1]["error"]
