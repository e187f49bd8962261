"""IMAP against a real Dovecot: IDLE latency, \\Seen left alone, checkpoints that survive
restarts, a UIDVALIDITY change without new duplicates, reconnects, and a backfill that is
killed with SIGKILL and run again — every message on the timeline exactly once."""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from connectors.email.imap import MailboxWatcher
from connectors.email.service import EmailConnector, configured_inboxes
from pipeline import contract as c
from pipeline import topics
from store import checkpoints
from tests.integration.email_support import (
    INBOX,
    Env,
    Proc,
    TopicReader,
    close_env,
    data_of,
    make_env,
    settle,
    until,
    wait_count,
    worker,
)
from tests.peers import DaemonPeer, start_dovecot

pytestmark = pytest.mark.integration
PASSWORD_ENV = "OMNIHUB_TEST_IMAP_PASSWORD"


@pytest.fixture
def dovecot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DaemonPeer]:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    peer = start_dovecot(tmp_path)
    yield peer
    peer.stop()


def imap_inbox(dovecot: DaemonPeer, **imap: Any) -> dict[str, Any]:
    return {
        "address": INBOX,
        "imap": {
            "host": "127.0.0.1",
            "port": dovecot.port,
            "ssl": False,
            "username": "support",
            "password_env": PASSWORD_ENV,
            **imap,
        },
    }


@pytest.fixture
async def env(tmp_path: Path, mongo_url: str, dovecot: DaemonPeer) -> AsyncIterator[Env]:
    e = await make_env(tmp_path, mongo_url, [imap_inbox(dovecot, initial="all")])
    e.env[PASSWORD_ENV] = "s3cret"
    yield e
    await close_env(e)


def mail(n: int, when: datetime | None = None) -> bytes:
    m = EmailMessage(policy=SMTP)
    m["From"] = f"Customer {n} <c{n % 20}@example.com>"
    m["To"] = INBOX
    m["Subject"] = f"question {n}"
    m["Message-ID"] = f"<imap-{n}@example.com>"
    if when:
        m["Date"] = when
    m.set_content(f"mail number {n}")
    return m.as_bytes()


def lmtp(dovecot: DaemonPeer, raw: bytes) -> None:
    with smtplib.LMTP("127.0.0.1", dovecot.ports["lmtp"]) as session:
        session.sendmail("customer@example.com", [INBOX], raw)


def client(dovecot: DaemonPeer) -> IMAPClient:
    imap = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False, timeout=10)
    imap.login("support", "s3cret")
    return imap


def append(
    dovecot: DaemonPeer,
    raws: list[bytes],
    flags: tuple[bytes, ...] = (),
    when: datetime | None = None,
) -> None:
    imap = client(dovecot)
    try:
        for raw in raws:
            imap.append("INBOX", raw, flags=flags, msg_time=when)
    finally:
        imap.logout()


def seen_flags(dovecot: DaemonPeer) -> list[bool]:
    imap = client(dovecot)
    try:
        imap.select_folder("INBOX", readonly=True)
        flags = imap.get_flags(imap.search("ALL"))
        return [b"\\Seen" in flags[u] for u in sorted(flags)]
    finally:
        imap.logout()


async def watch(env: Env, **imap: Any) -> tuple[EmailConnector, MailboxWatcher]:
    conn = EmailConnector(env.publisher, env.store, env.settings, configured_inboxes(env.settings))
    inbox = conn.inboxes[INBOX]
    if imap:
        inbox = inbox.model_copy(update={"imap": inbox.imap.model_copy(update=imap)})  # type: ignore[union-attr]
    watcher = MailboxWatcher(conn, inbox, "INBOX", asyncio.get_running_loop())
    watcher.start()
    await until(watcher.caught_up.is_set, 20, "the watcher to catch up")
    return conn, watcher


async def unwatch(watcher: MailboxWatcher) -> None:
    watcher.stop()
    await asyncio.to_thread(watcher.join, 10)
    assert not watcher.is_alive()


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [m["source_id"] for m in data_of(records, c.MESSAGE_RECEIVED)]


async def arrival(inbound: TopicReader, n: int, t0: float, timeout: float) -> float:
    """Seconds from ``t0`` until mail ``n`` was on Kafka."""
    await inbound.wait(lambda r: f"imap-{n}@example.com" in ids(r), timeout, f"mail {n}")
    return inbound.arrived[-1] - t0


async def test_idle_streams_new_mail_within_seconds_and_never_marks_it_seen(
    env: Env, dovecot: DaemonPeer
) -> None:
    _, watcher = await watch(env, initial="new")
    latencies = []
    try:
        async with TopicReader(env.bootstrap, topics.INBOUND) as inbound:
            for n in range(5):
                t0 = time.monotonic()
                await asyncio.to_thread(lmtp, dovecot, mail(n))
                latencies.append(await arrival(inbound, n, t0, 10))
            # the server drops the connection: the watcher reconnects and goes on
            await asyncio.to_thread(
                subprocess.run,
                ["doveadm", "-c", str(dovecot.home / "dovecot.conf"), "kick", "support"],
                check=True,
                capture_output=True,
            )
            await asyncio.to_thread(lmtp, dovecot, mail(5))
            await inbound.wait(lambda r: "imap-5@example.com" in ids(r), 20, "mail after a kick")
    finally:
        await unwatch(watcher)
    assert max(latencies) <= 3.0, latencies
    assert seen_flags(dovecot) == [False] * 6
    assert sorted(ids(inbound.records)) == sorted(f"imap-{n}@example.com" for n in range(6))


async def test_checkpoints_survive_restarts_and_a_uidvalidity_change_adds_no_new_ids(
    env: Env, dovecot: DaemonPeer
) -> None:
    append(dovecot, [mail(0), mail(1)], flags=(b"\\Seen",))  # read by someone elsewhere
    append(dovecot, [mail(2), mail(3), mail(4)])
    async with TopicReader(env.bootstrap, topics.INBOUND) as inbound:
        _, w1 = await watch(env)
        await inbound.wait(lambda r: len(r) >= 5, 10, "the 5 mails already in the mailbox")
        await unwatch(w1)
        cp = await checkpoints.get(env.store, INBOX, "INBOX")
        assert cp is not None and cp.last_uid == 5
        append(dovecot, [mail(5), mail(6), mail(7)])
        _, w2 = await watch(env)
        await inbound.wait(lambda r: len(r) >= 8, 10, "3 mails that came while stopped")
        await unwatch(w2)
        await asyncio.sleep(0.5)
        assert len(inbound.records) == 8  # nothing published twice across the restart
        # the server renumbers the mailbox
        conf = str(dovecot.home / "dovecot.conf")
        await asyncio.to_thread(
            subprocess.run,
            [
                "doveadm",
                "-c",
                conf,
                "mailbox",
                "update",
                "-u",
                "support",
                "--uid-validity",
                "4242",
                "INBOX",
            ],
            check=True,
            capture_output=True,
        )
        append(dovecot, [mail(8)])
        _, w3 = await watch(env)
        await inbound.wait(lambda r: "imap-8@example.com" in ids(r), 10, "mail after the change")
        await unwatch(w3)
    cp = await checkpoints.get(env.store, INBOX, "INBOX")
    assert cp is not None and cp.uidvalidity == 4242 and cp.last_uid == 9
    event_ids = {r["id"] for r in inbound.records}
    assert event_ids == {
        c.message_event_id("email", INBOX, f"imap-{n}@example.com") for n in range(9)
    }
    assert seen_flags(dovecot) == [True, True] + [False] * 7


async def test_backfill_killed_midway_and_run_again_stores_every_message_once(
    env: Env, dovecot: DaemonPeer, tmp_path: Path
) -> None:
    n = 200
    old = datetime(2025, 6, 1, tzinfo=UTC)
    recent = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
    await asyncio.to_thread(append, dovecot, [mail(10_000 + i, old) for i in range(5)], (), old)
    await asyncio.to_thread(append, dovecot, [mail(i, recent) for i in range(n)], (), recent)
    work = worker(env, tmp_path / "worker.log")
    argv = ["email", "backfill", "--mailbox", "INBOX", "--since", "2026-01-01"]
    penv = env.env | {"OMNIHUB_EMAIL_IMAP_BATCH": "10", "OMNIHUB_LOG_LEVEL": "warning"}
    try:
        first = Proc(argv, penv, tmp_path / "backfill-1.log").start()
        position = "INBOX#backfill:2026-01-01"

        async def progressed() -> int:
            cp = await checkpoints.get(env.store, INBOX, position)
            return cp.last_uid if cp else 0

        for _ in range(1200):  # up to 60 s
            if await progressed() >= 40 + 5:
                break
            await asyncio.sleep(0.05)
        first.kill9()
        assert 40 <= await progressed() < n + 5, "backfill finished before the kill"
        second = Proc(argv, penv, tmp_path / "backfill-2.log").start()
        assert await asyncio.to_thread(second.wait, 120) == 0
        out = (tmp_path / "backfill-2.log").read_text()
        assert f"backfill done: {n} messages" in out
        assert await wait_count(env.store, n, 120) == n
        assert await settle(env.store) == n
    finally:
        work.stop()
    stored = {d["_id"] async for d in env.store.interactions.find({}, {"_id": 1})}
    assert stored == {c.message_event_id("email", INBOX, f"imap-{i}@example.com") for i in range(n)}
    assert seen_flags(dovecot) == [False] * (n + 5)


async def test_mail_that_lands_as_the_watcher_enters_idle_is_not_left_for_the_poll(
    env: Env, dovecot: DaemonPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mail delivered while the watcher is between its catch-up and IDLE: the server says
    EXISTS right behind its "+ idling", often in the same packet, so the line sits in the
    client's read buffer where a socket poll never sees it. It must still arrive within
    seconds, not at the next safety-net poll."""
    to_deliver: list[int] = []
    real_idle = IMAPClient.idle

    def idle_after_delivery(self: IMAPClient) -> None:
        while to_deliver:  # in the watcher's thread, after its catch-up, before IDLE
            lmtp(dovecot, mail(to_deliver.pop(0)))
        real_idle(self)

    monkeypatch.setattr(IMAPClient, "idle", idle_after_delivery)
    _, watcher = await watch(env, initial="new")
    latencies = []
    try:
        async with TopicReader(env.bootstrap, topics.INBOUND) as inbound:
            for n in range(10):
                t0 = time.monotonic()
                to_deliver.append(n)
                # a first mail wakes the watcher; its next IDLE then starts right behind mail n
                await asyncio.to_thread(lmtp, dovecot, mail(100 + n))
                latencies.append(await arrival(inbound, n, t0, 20))
    finally:
        await unwatch(watcher)
    assert max(latencies) <= 3.0, latencies
