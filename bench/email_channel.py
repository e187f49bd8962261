"""Email channel benchmark: real Postfix and Dovecot in front of omnihub, on this machine.

Phases, one run, one stack (tansu, SecantusDB, `omnihub worker`, `omnihub connector email`
with an IMAP inbox on Dovecot, a private Postfix relaying to the connector's SMTP port):

  1. IDLE latency: mail delivered into Dovecot (LMTP, the way an MTA delivers) at a steady
     rate; each timed from Dovecot's 250 to its interaction.recorded event (= stored).
     Target: p99 <= 3 s (Chatwoot polls IMAP every 60 s).
  2. IMAP backfill: 1,000 messages in a folder, `omnihub email backfill` from its start until
     all 1,000 are stored. Target: <= 30 s (Chatwoot reports ~3-4 min per 100).
  3. SMTP throughput: N mails injected into Postfix (8 sessions), which relays them to
     omnihub; from the first injection until all N are stored. Its ratio is taken to the
     same-run limit of the pipeline behind it: N message.received events produced straight to
     omnihub.inbound.v1 and timed until all are stored by the same worker.

Prints a summary, then, last, one JSON line. Progress goes to stderr. Needs the Debian
packages postfix, dovecot-imapd, dovecot-lmtpd (`make bench-email` installs them).
"""

# ruff: noqa: E402  (sys.path must be fixed before the imports, see below)
from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the stdlib package `email`: run as a script, its folder comes first
# on sys.path and would shadow it. Take the folder off, put the repository root on.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse
import asyncio
import json
import os
import signal
import smtplib
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from imapclient import IMAPClient

from connectors.base import inbound_key
from hub.bootstrap import create_topics
from hub.settings import Settings
from pipeline import contract as c
from pipeline import topics
from tests.integration.email_support import Proc, http_ok
from tests.peers import (
    free_port,
    port_open,
    start_dovecot,
    start_postfix,
    start_secantus,
    start_tansu,
)

INBOX = "support@bench.example.com"
IDLE_TARGET, BACKFILL_TARGET = 3.0, 30.0


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def mail(tag: str, n: int) -> bytes:
    m = EmailMessage(policy=SMTP)
    m["From"] = f"Customer {n} <c{n % 200}@example.com>"
    m["To"] = INBOX
    m["Subject"] = f"سفارش {n} / order {n}"
    m["Message-ID"] = f"<{tag}-{n}@example.com>"
    m["Date"] = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
    m.set_content(f"سلام، سفارش شماره {n} هنوز نرسیده. Order {n} has not arrived.\n" * 3)
    return m.as_bytes()


def eid(tag: str, n: int) -> str:
    return c.message_event_id("email", INBOX, f"{tag}-{n}@example.com")


class Recorded:
    """Follows omnihub.customer-events.v1: interaction id → when it was recorded (stored), or
    with ``topic=INBOUND`` message event id → when the connector had it acknowledged."""

    def __init__(self, bootstrap: str, topic: str = topics.CUSTOMER_EVENTS) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=f"bench-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for recs in batch.values():
                for r in recs:
                    ev = json.loads(r.value)
                    if ev["type"] == c.INTERACTION_RECORDED:
                        self.at.setdefault(ev["data"]["interaction_id"], now)
                    elif ev["type"] == c.MESSAGE_RECEIVED:
                        self.at.setdefault(ev["id"], now)

    async def wait(self, ids: Sequence[str], timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(i in self.at for i in ids):
                return max(self.at[i] for i in ids)
            await asyncio.sleep(0.02)
        missing = sum(i not in self.at for i in ids)
        raise RuntimeError(f"{missing} of {len(ids)} messages not stored after {timeout}s")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def idle_latency(dovecot: Any, rec: Recorded, count: int, rate: float) -> list[float]:
    latencies: list[float] = []
    pending: list[tuple[str, float]] = []

    def deliver(raw: bytes) -> None:
        with smtplib.LMTP("127.0.0.1", dovecot.ports["lmtp"]) as s:
            s.sendmail("customer@example.com", [INBOX], raw)

    for n in range(count):
        await asyncio.to_thread(deliver, mail("idle", n))
        pending.append((eid("idle", n), time.monotonic()))
        await asyncio.sleep(1 / rate)
    for event_id, t0 in pending:
        done = await rec.wait([event_id], 60)
        latencies.append(rec.at[event_id] - t0 if done else 60.0)
    return latencies


async def backfill(
    dovecot: Any, env: dict[str, str], rec: Recorded, acked: Recorded, count: int, work: Path
) -> tuple[float, float, float]:
    def fill() -> None:
        imap = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
        imap.login("support", "s3cret")
        imap.create_folder("Archive")
        when = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
        for n in range(count):
            imap.append("Archive", mail("archive", n), msg_time=when)
        imap.logout()

    await asyncio.to_thread(fill)
    t0 = time.monotonic()
    proc = Proc(
        ["email", "backfill", "--mailbox", "Archive", "--since", "2026-01-01"],
        env | {"OMNIHUB_LOG_LEVEL": "warning"},
        work / "backfill.log",
    ).start()
    code = await asyncio.to_thread(proc.wait, 300)
    command_s = time.monotonic() - t0
    if code != 0:
        raise RuntimeError(f"backfill exited {code}: {(work / 'backfill.log').read_text()[-2000:]}")
    ids = [eid("archive", n) for n in range(count)]
    on_kafka = await acked.wait(ids, 300)
    stored = await rec.wait(ids, 300)
    return stored - t0, command_s, on_kafka - t0


async def smtp_throughput(
    postfix: Any, rec: Recorded, acked: Recorded, count: int, sessions: int
) -> tuple[float, float, float]:
    batch = [mail("smtp", n) for n in range(count)]

    def inject(part: list[bytes]) -> None:
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=60) as s:
            for raw in part:
                s.sendmail("customer@example.com", [INBOX], raw)

    t0 = time.monotonic()
    await asyncio.gather(*(asyncio.to_thread(inject, batch[k::sessions]) for k in range(sessions)))
    injected = time.monotonic() - t0
    ids = [eid("smtp", n) for n in range(count)]
    on_kafka = await acked.wait(ids, 600)
    done = await rec.wait(ids, 600)
    return count / (done - t0), count / injected, count / (on_kafka - t0)


async def pipeline_limit(bootstrap: str, rec: Recorded, count: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, acks="all")
    await producer.start()
    ids = []
    t0 = time.monotonic()
    try:
        for n in range(count):
            m = c.Message(
                channel="email",
                account=INBOX,
                source_id=f"limit-{n}@example.com",
                sender=[c.Identifier(kind="email", value=f"c{n % 200}@example.com")],
                thread=f"limit-{n}@example.com",
                occurred_at=c.utcnow(),
                subject=f"order {n}",
                text=f"Order {n} has not arrived.",
            )
            ids.append(m.event_id)
            await producer.send(
                topics.INBOUND, c.message_event(m, source="/bench").to_json(), key=inbound_key(m)
            )
        await producer.flush()
    finally:
        await producer.stop()
    done = await rec.wait(ids, 600)
    return count / (done - t0)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--idle", type=int, default=40, help="mails for the IDLE latency phase")
    ap.add_argument("--rate", type=float, default=4.0, help="IDLE phase deliveries per second")
    ap.add_argument("--backfill", type=int, default=1000, help="mails in the backfill folder")
    ap.add_argument("--smtp", type=int, default=1000, help="mails through Postfix")
    ap.add_argument("--sessions", type=int, default=8, help="parallel SMTP sessions to Postfix")
    args = ap.parse_args()
    # SIGTERM (e.g. `timeout`) cancels the run, so that the finally below stops every peer
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    work = Path(tempfile.mkdtemp(prefix="omnihub-bench-email-"))
    log(f"work dir {work}")
    broker, mongo, dovecot = start_tansu(work), start_secantus(work), start_dovecot(work)
    smtp_port = free_port()
    postfix = start_postfix(work, smtp_port)
    bootstrap = f"127.0.0.1:{broker.port}"
    mongo_url = f"mongodb://127.0.0.1:{mongo.port}/?retryWrites=false&directConnection=true"
    settings = Settings(kafka_bootstrap=bootstrap, mongo_uri=mongo_url, kafka_idempotence=False)
    await create_topics(settings)
    inboxes = [
        {
            "address": INBOX,
            "imap": {
                "host": "127.0.0.1",
                "port": dovecot.port,
                "ssl": False,
                "username": "support",
                "password_env": "BENCH_IMAP_PASSWORD",
                "mailboxes": ["INBOX"],
            },
        }
    ]
    worker_port = free_port()
    env = {
        "OMNIHUB_KAFKA_BOOTSTRAP": bootstrap,
        "OMNIHUB_KAFKA_IDEMPOTENCE": "false",
        "OMNIHUB_MONGO_URI": mongo_url,
        "OMNIHUB_DATA_DIR": str(work / "data"),
        "OMNIHUB_EMAIL_SMTP_PORT": str(smtp_port),
        "OMNIHUB_EMAIL_INBOXES": json.dumps(inboxes),
        "OMNIHUB_WORKER_PORT": str(worker_port),
        "OMNIHUB_LOG_LEVEL": "warning",
        "BENCH_IMAP_PASSWORD": "s3cret",
    }
    procs: list[Proc] = []
    rec = Recorded(bootstrap)
    acked = Recorded(bootstrap, topics.INBOUND)
    result: dict[str, Any] = {"bench": "email"}
    try:
        procs.append(
            Proc(["worker"], env, work / "worker.log").start(
                http_ok(f"http://127.0.0.1:{worker_port}/healthz"), timeout=90
            )
        )
        procs.append(
            Proc(["connector", "email"], env, work / "connector.log").start(
                lambda: port_open(smtp_port), timeout=90
            )
        )
        await rec.start()
        await acked.start()
        await asyncio.sleep(2.0)  # the IMAP watcher logs in and enters IDLE

        log(f"phase 1: {args.idle} mails into Dovecot at {args.rate}/s, IDLE → stored")
        lat = await idle_latency(dovecot, rec, args.idle, args.rate)
        result |= {
            "idle_n": len(lat),
            "idle_p50_s": round(statistics.median(lat), 3),
            "idle_p99_s": round(pct(lat, 0.99), 3),
            "idle_max_s": round(max(lat), 3),
            "idle_target_s": IDLE_TARGET,
        }

        log(f"phase 2: backfill of {args.backfill} mails")
        stored_s, command_s, kafka_s = await backfill(dovecot, env, rec, acked, args.backfill, work)
        result |= {
            "backfill_n": args.backfill,
            "backfill_s": round(stored_s, 2),
            "backfill_command_s": round(command_s, 2),
            "backfill_on_kafka_s": round(kafka_s, 2),
            "backfill_target_s": BACKFILL_TARGET,
        }

        log(f"phase 3: {args.smtp} mails through Postfix ({args.sessions} sessions)")
        smtp_rate, inject_rate, kafka_rate = await smtp_throughput(
            postfix, rec, acked, args.smtp, args.sessions
        )
        log(f"phase 3b: pipeline limit, {args.smtp} events straight to Kafka")
        limit = await pipeline_limit(bootstrap, rec, args.smtp)
        result |= {
            "smtp_n": args.smtp,
            "smtp_msgs_per_s": round(smtp_rate, 1),
            "postfix_inject_msgs_per_s": round(inject_rate, 1),
            "smtp_to_kafka_msgs_per_s": round(kafka_rate, 1),
            "pipeline_limit_msgs_per_s": round(limit, 1),
            "smtp_ratio_to_limit": round(smtp_rate / limit, 3),
        }
    finally:
        await rec.stop()
        await acked.stop()
        for p in reversed(procs):
            p.stop()
        postfix.stop()
        dovecot.stop()
        mongo.stop()
        broker.stop()
    r = result
    print(f"email bench on {os.cpu_count()} cores")
    print(
        f"  IDLE: mail in Dovecot → stored   p50 {r['idle_p50_s']:.2f} s  p99 "
        f"{r['idle_p99_s']:.2f} s  max {r['idle_max_s']:.2f} s  (n={r['idle_n']}; target p99 "
        f"≤ {IDLE_TARGET:.0f} s → {r['idle_p99_s'] / IDLE_TARGET:.2f} of target)"
    )
    print(
        f"  backfill of {r['backfill_n']} → all stored   {r['backfill_s']:.1f} s  (command "
        f"{r['backfill_command_s']:.1f} s, all on Kafka after {r['backfill_on_kafka_s']:.1f} s; "
        f"target ≤ {BACKFILL_TARGET:.0f} s → "
        f"{r['backfill_s'] / BACKFILL_TARGET:.2f} of target)"
    )
    print(
        f"  SMTP through Postfix → stored   {r['smtp_msgs_per_s']:.0f} msg/s  (Postfix took "
        f"them at {r['postfix_inject_msgs_per_s']:.0f}/s, the connector had them on Kafka at "
        f"{r['smtp_to_kafka_msgs_per_s']:.0f}/s); pipeline limit "
        f"{r['pipeline_limit_msgs_per_s']:.0f} msg/s → ratio {r['smtp_ratio_to_limit']:.2f}"
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
