"""End-to-end ingest benchmark: how close does omnihub's pipeline come to the machine's limit?

Phases, all in one run against one stack (its own `omnihub up`, unless --api/--token-file/
--kafka/--mongo point at a running one):

  1. start the stack, note its time-to-ready and its idle RSS (all its processes);
  2. throughput: produce N generated messages to omnihub.inbound.v1 as fast as possible and
     time, from the first send, until every interaction.recorded event is on
     omnihub.customer-events.v1 and the interactions collection holds all N;
  3. limit: (a) the same N message bytes produced and consumed through a fresh topic of the
     same broker, (b) insert_many of N interaction-shaped documents into a scratch collection
     of the same MongoDB server; limit = min(a, b); then the store floor (bench/_floor.py):
     the time to insert_many, once each, the documents the throughput phase left behind;
  4. latency: POST messages to the HTTP API at a fixed rate (open loop) and time each one
     from its 202 to its interaction.recorded event: when a consumer of the bench sees it
     (``--watch-wait``), and by the event's broker timestamp (the worker sends it once the
     store acknowledged the batch, so that one leaves the bench's own hop out).

It prints a summary, then, last, one JSON line. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _floor
import _stack  # before the rest: it moves bench/ to the end of sys.path
import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient

from connectors.base import inbound_key
from hub.embedded import EMBEDDED_PARTITIONS
from pipeline import contract as c
from pipeline import topics
from store.mongo import INDEXES
from unify.identifiers import normalize

DB = "omnihub"
STORED = "omnihub_ingest_events_total"
INTERACTIONS_INDEXES = INDEXES["interactions"]  # the limit pays what ingest pays
INSERT_BATCH = 500
PRODUCER = {"acks": "all", "enable_idempotence": False, "linger_ms": 10,
            "max_batch_size": 256 * 1024, "request_timeout_ms": 30000}
# the limit phase's consumer: aiokafka's default fetch wait (500 ms); its fetches find data
CONSUMER = {"group_id": None, "enable_auto_commit": False, "fetch_max_wait_ms": 500,
            "max_partition_fetch_bytes": 4 * 1024 * 1024}


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ============================================================================ generator
FA_FIRST = ["علی", "محمد", "زهرا", "فاطمه", "مریم", "حسین", "رضا", "سارا", "نرگس", "امیر",
            "مهدی", "نیلوفر", "پریسا", "کیان", "شیرین", "بهرام", "آرش", "الهام", "یاسمن"]
FA_LAST = ["رضایی", "محمدی", "حسینی", "احمدی", "کریمی", "موسوی", "جعفری", "صادقی", "رحیمی",
           "نوری", "قاسمی", "تهرانی", "شریفی", "کاظمی", "اکبری"]
EN_FIRST = ["Ali", "Sara", "John", "Maryam", "Reza", "Emily", "David", "Neda", "Omid", "Laura",
            "Kian", "Anna", "Babak", "Mina", "Peter"]
EN_LAST = ["Rezaei", "Smith", "Karimi", "Johnson", "Ahmadi", "Brown", "Moradi", "Taylor",
           "Hosseini", "Miller", "Sadeghi", "Wilson"]
FA_TEXT = [
    "سلام، سفارش من هنوز به دستم نرسیده است.", "لطفاً وضعیت ارسال را بررسی کنید.",
    "شماره پیگیری را گرفتم اما در سایت پست پیدا نمی‌شود.", "مبلغ دو بار از حساب من کسر شده است.",
    "می‌خواهم اشتراکم را تمدید کنم ولی صفحه پرداخت خطا می‌دهد.", "ممنون از پاسخ سریع شما.",
    "آیا امکان تعویض کالا وجود دارد؟", "رمز عبورم را فراموش کرده‌ام و پیامک تأیید نمی‌آید.",
    "کد تخفیف روی سبد خرید اعمال نمی‌شود.", "لطفاً با من تماس بگیرید، عجله دارم.",
    "فاکتور رسمی با کد اقتصادی لازم دارم.", "بسته آسیب‌دیده به دستم رسید و جعبه باز شده بود.",
    "سفارش شماره ۴۵۸۲۱۹ را لغو کنید.", "ساعت کاری پشتیبانی تا چه زمانی است؟",
]
EN_TEXT = [
    "Hi, my order still has not arrived.", "Could you please check the delivery status?",
    "I was charged twice for the same invoice.", "The tracking number does not work on the site.",
    "I would like to change the shipping address of order 458219.", "Thanks for the quick reply!",
    "The discount code is rejected at checkout.", "Please call me back as soon as possible.",
    "I cannot log in: the verification SMS never comes.", "Is it possible to exchange the item?",
    "The package was damaged when it was delivered.", "Can I get a formal invoice for my company?",
]
SUBJECTS = ["Order problem", "مشکل پرداخت", "Re: Invoice", "پیگیری سفارش", "Refund request",
            "Question about my account", "ارسال نشده"]
DOMAINS = ["gmail.com", "yahoo.com", "example.ir", "chmail.ir", "outlook.com"]
FA_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
SMS_ACCOUNT, EMAIL_ACCOUNT = "sms:30001234", "support@shop.example"


@dataclass(frozen=True)
class Sender:
    kind: str  # phone | email
    forms: tuple[str, ...]  # the raw spellings this sender shows up with
    norm: str
    name: str | None
    persian: bool
    threads: tuple[str, ...]


def _phone_forms(rng: random.Random) -> list[str]:
    prefix = rng.choice(["912", "935", "919", "901", "990", "939", "921"])
    d = f"{prefix}{rng.randrange(10**7):07d}"
    spaced = f"{d[:3]} {d[3:6]} {d[6:]}"
    return [f"0{d}", f"+98{d}", f"0098{d}", f"0{d}".translate(FA_DIGITS), f"+98 {spaced}",
            f"0{spaced}".translate(FA_DIGITS), f"0{d[:3]}-{d[3:6]}-{d[6:]}"]


def _email_forms(rng: random.Random, first: str, last: str) -> list[str]:
    local = f"{first}{rng.choice(['.', '_', ''])}{last}{rng.choice(['', str(rng.randrange(100))])}"
    addr = f"{local.lower()}@{rng.choice(DOMAINS)}"
    noisy = "".join(ch.upper() if rng.random() < 0.3 else ch for ch in addr)
    return [addr, noisy, addr.title(), addr.upper(), f" {addr} "]


def _text(rng: random.Random, persian: bool) -> str:
    pool, target = (FA_TEXT if persian else EN_TEXT), rng.randint(50, 400)
    out = ""
    while len(out) < target:
        out += (" " if out else "") + rng.choice(pool)
    return out[:400].rsplit(" ", 1)[0] if len(out) > 400 else out


def make_senders(rng: random.Random, count: int) -> list[Sender]:
    senders: list[Sender] = []
    seen: set[str] = set()
    while len(senders) < count:
        persian = rng.random() < 0.65
        first = rng.choice(FA_FIRST if persian else EN_FIRST)
        last = rng.choice(FA_LAST if persian else EN_LAST)
        if rng.random() < 0.7:
            kind, forms = "phone", _phone_forms(rng)
        else:
            kind = "email"
            forms = _email_forms(rng, rng.choice(EN_FIRST), rng.choice(EN_LAST))
        forms = rng.sample(forms, k=rng.randint(2, 3))
        norms = {normalize(kind, f) for f in forms}  # the bench's own check of its data
        if len(norms) != 1:
            raise SystemExit(f"bench: generator bug: {forms} normalise to {sorted(norms)}")
        norm = norms.pop()
        if norm in seen:
            continue
        seen.add(norm)
        tkey = uuid.UUID(int=rng.getrandbits(128)).hex[:16]
        threads = (tuple(f"<{tkey}.{k}@mail.example>" for k in range(2)) if kind == "email"
                   else (f"30001234:{norm.removeprefix('phone:')}",))
        name = f"{first} {last}" if kind == "email" or rng.random() < 0.8 else None
        senders.append(Sender(kind, tuple(forms), norm, name, persian, threads))
    return senders


def sender_sequence(rng: random.Random, n: int, s: int) -> list[int]:
    """Which sender writes each message: everyone at least once, a heavy tail writes more."""
    weights = [min(rng.paretovariate(1.3), 40.0) for _ in range(s)]
    seq = list(range(min(s, n))) + rng.choices(range(s), weights=weights, k=max(n - s, 0))
    rng.shuffle(seq)
    return seq


@dataclass
class Workload:
    messages: list[c.Message]
    keys: list[bytes]
    values: list[bytes]
    ids: list[str]


def kafka_workload(rng: random.Random, senders: list[Sender], n: int, run: str) -> Workload:
    base = datetime.now(UTC) - timedelta(hours=1)
    msgs: list[c.Message] = []
    for i, si in enumerate(sender_sequence(rng, n, len(senders))):
        s = senders[si]
        email = s.kind == "email"
        thread = s.threads[0] if rng.random() < 0.85 else s.threads[-1]
        msgs.append(c.Message.model_validate({
            "channel": "email" if email else "sms",
            "account": EMAIL_ACCOUNT if email else SMS_ACCOUNT,
            "source_id": f"bench-{run}-{i:07d}", "display_name": s.name, "thread": thread,
            "sender": [{"kind": s.kind, "value": rng.choice(s.forms)}],
            "occurred_at": base + timedelta(milliseconds=20 * i),
            "subject": rng.choice(SUBJECTS) if email else None, "text": _text(rng, s.persian),
        }))
    keys = [inbound_key(m) for m in msgs]
    values = [c.message_event(m, source=f"/omnihub/connectors/{m.channel}").to_json()
              for m in msgs]
    return Workload(msgs, keys, values, [m.event_id for m in msgs])


def api_bodies(rng: random.Random, senders: list[Sender], n: int, run: str) -> list[bytes]:
    out = []
    for i, si in enumerate(sender_sequence(rng, n, len(senders))):
        s = senders[si]
        out.append(orjson.dumps({
            "source_id": f"bench-{run}-api-{i:07d}", "display_name": s.name,
            "sender": [{"kind": s.kind, "value": rng.choice(s.forms)}],
            "thread": f"api-{s.threads[0]}", "text": _text(rng, s.persian),
        }))
    return out


def interaction_docs(w: Workload) -> list[dict[str, Any]]:
    """Documents shaped like the worker's (pipeline/agents/ingest.py _interaction_doc)."""
    now = datetime.now(UTC)
    return [{
        "_id": eid, "customer_id": c.derived_id(eid, "customer"),
        "conversation_id": c.derived_id(eid, "conversation"), "channel": m.channel,
        "direction": m.direction, "account": m.account, "source_id": m.source_id,
        "thread": m.thread, "sender": [normalize(i.kind, i.value) for i in m.sender],
        "display_name": m.display_name, "occurred_at": m.occurred_at, "received_at": now,
        "subject": m.subject, "text": m.text, "html": m.html, "attachments": [], "call": None,
    } for m, eid in zip(w.messages, w.ids, strict=True)]


# ============================================================================ measuring
def pct(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None when there is nothing to rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-p * len(ordered) // 100)) - 1))]


class EventWatch:
    """Tails customer-events and the dead-letter topic from their current ends and notes when
    each interaction.recorded (or dead letter) shows up. Keeps every id it sees, so a 202 that
    is read after its event has arrived is still matched."""

    def __init__(self, bootstrap: str, wait_ms: int) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap,
                                         **{**CONSUMER, "fetch_max_wait_ms": wait_ms})
        self.arrived: dict[str, float] = {}  # interaction id -> monotonic arrival
        self.broker_ts: dict[str, float] = {}  # interaction id -> record timestamp (monotonic)
        self.dead: dict[str, str] = {}  # event id -> error
        self.wanted: set[str] = set()  # ids the current phase waits for
        self.hits = 0  # wanted ids recorded
        self.dead_hits = 0  # wanted ids dead-lettered
        self.progress = asyncio.Event()  # set after every fetch
        self.task: asyncio.Task[None] | None = None
        self._wall_to_mono = time.monotonic() - time.time()

    def reset(self) -> None:
        self.wanted, self.hits, self.dead_hits = set(), 0, 0

    def want(self, ids: Sequence[str]) -> None:
        for i in ids:
            if i not in self.wanted:
                self.wanted.add(i)
                self.hits += i in self.arrived
                self.dead_hits += i in self.dead

    async def wait(self, target: int, stall: float, until: float = math.inf) -> bool:
        """Until ``target`` wanted ids are recorded or dead; False after ``stall`` s without
        progress or at the monotonic time ``until``."""
        last, last_t = -1, time.monotonic()
        while (settled := self.hits + self.dead_hits) < target:
            if settled != last:
                last, last_t = settled, time.monotonic()
            elif time.monotonic() - last_t > stall:
                return False
            if time.monotonic() >= until:
                return False
            if self.task is not None and self.task.done():
                self.task.result()  # the consumer stopped: raise why
                raise RuntimeError("the customer-events consumer stopped")
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), 1.0)
        return True

    async def start(self) -> None:
        await self.consumer.start()
        await self.consumer.topics()  # loads the metadata partitions_for_topic reads
        tps = [TopicPartition(t, p) for t in (topics.CUSTOMER_EVENTS, topics.DEADLETTER)
               for p in sorted(self.consumer.partitions_for_topic(t) or ())]
        self.consumer.assign(tps)
        # tansu's end offsets may be a little short (INFRA quirk 2): old events that slip in
        # carry ids of no run's messages, so they are harmless.
        for tp, off in (await self.consumer.end_offsets(tps)).items():
            self.consumer.seek(tp, off)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=500)
            now = time.monotonic()
            for tp, records in batches.items():
                for r in records:
                    if tp.topic == topics.DEADLETTER:
                        self._dead(r.value)
                    elif r.value and c.INTERACTION_RECORDED.encode() in r.value[:400]:
                        iid = orjson.loads(r.value)["data"]["interaction_id"]
                        if iid not in self.arrived:
                            self.arrived[iid] = now
                            self.broker_ts[iid] = r.timestamp / 1000 + self._wall_to_mono
                            self.hits += iid in self.wanted
            self.progress.set()

    def _dead(self, value: bytes | None) -> None:
        with contextlib.suppress(Exception):
            data = orjson.loads(value or b"")["data"]
            eid = orjson.loads(base64.b64decode(data["value_b64"]))["id"]
            if eid not in self.dead:
                self.dead[eid] = f"{data['stage']}: {data['error']}"
                self.dead_hits += eid in self.wanted

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()


async def worker_metrics(url: str | None) -> dict[str, float]:
    """The worker's ingest counters from its Prometheus /metrics (empty if unreachable)."""
    if not url:
        return {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s, \
                s.get(f"{url}/metrics") as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        batch = name.startswith(("omnihub_ingest_batch_seconds_", "omnihub_ingest_batch_size_"))
        if (batch and name.endswith(("_sum", "_count"))) or name == STORED + '{outcome="stored"}':
            out[name.partition("{")[0]] = float(value)
        elif name == 'omnihub_ingest_stage_seconds_sum{stage="write"}':
            out["write_seconds_sum"] = float(value)
    return out


class WorkerProgress:
    """What the worker says it did since :meth:`start` (its /metrics, polled)."""

    def __init__(self, url: str | None) -> None:
        self.url, self.t0 = url, 0.0
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    async def start(self) -> None:
        self.first = self.last = await worker_metrics(self.url)
        self.t0 = time.monotonic()

    def delta(self, name: str) -> float:
        return self.last.get(name, 0.0) - self.first.get(name, 0.0)

    async def poll(self) -> str:
        self.last = await worker_metrics(self.url) or self.last
        return f"; worker stored {self.delta(STORED):,.0f}" if self.url else ""

    async def batches(self) -> dict[str, float]:
        """Batches since start: count, mean size, mean seconds, summed seconds ÷ wall time."""
        await self.poll()
        count = self.delta("omnihub_ingest_batch_seconds_count")
        if not count:
            return {"batches": 0, "stored": self.delta(STORED)} if self.url else {}
        busy = self.delta("omnihub_ingest_batch_seconds_sum")
        wall = time.monotonic() - self.t0
        return {"batches": count, "size": self.delta("omnihub_ingest_batch_size_sum") / count,
                "seconds": busy / count, "busy": busy / wall,
                "writing": self.delta("write_seconds_sum") / wall,
                "stored": self.delta(STORED)}


async def ticker(label: str, line: Any, worker: WorkerProgress, every: float = 2.0) -> None:
    t0 = time.monotonic()
    while True:
        await asyncio.sleep(every)
        log(f"[{label} {time.monotonic() - t0:5.1f}s] {line()}{await worker.poll()}")


# ============================================================================ phases
@dataclass
class Result:
    values: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    worker: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # something failed or was not stored
    info: list[str] = field(default_factory=list)
    floor: _floor.Floor | None = None


async def throughput_phase(
    a: argparse.Namespace, w: Workload, watch: EventWatch, mongo: AsyncMongoClient[Any],
    pids: list[int], res: Result,
) -> None:
    n, coll = len(w.ids), mongo[DB]["interactions"]
    before = await coll.count_documents({})
    producer = AIOKafkaProducer(bootstrap_servers=a.kafka, **PRODUCER)
    await producer.start()
    watch.reset()
    watch.want(w.ids)
    progress = WorkerProgress(a.worker)
    await progress.start()
    tick = asyncio.create_task(ticker(
        "throughput", lambda: f"recorded events seen {watch.hits:,}/{n:,}", progress))
    meter = _stack.CpuMeter(pids)
    meter.start()
    t0 = time.monotonic()
    try:
        futures = [await producer.send(topics.INBOUND, v, key=k)
                   for k, v in zip(w.keys, w.values, strict=True)]
        await asyncio.gather(*futures)
        acked = time.monotonic() - t0
        if not await watch.wait(n, a.stall, t0 + (a.max_seconds or math.inf)):
            res.notes.append(f"throughput: stopped after {time.monotonic() - t0:.0f}s (no "
                             f"progress for --stall {a.stall:g}s, or --max-seconds)")
        # done = the last event seen and a count (taken after it) showing every document;
        # the clock stops when that count query starts (SecantusDB counts by a full scan)
        stored, deadline = watch.hits, time.monotonic() + a.stall
        while True:
            asked = time.monotonic()
            count = await coll.count_documents({})
            if count >= before + stored or asked > deadline:
                break
            await asyncio.sleep(0.05)
        elapsed = asked - t0
    finally:
        tick.cancel()
        await producer.stop()
    res.cpu["throughput"] = meter.stop()
    res.worker["throughput"] = await progress.batches()
    res.values.update(throughput=stored / elapsed, elapsed_s=elapsed, produce_acked_s=acked,
                      stored=stored, stored_docs=count - before,
                      dead=watch.dead_hits)
    if stored + res.values["dead"] < n or count - before < stored:
        res.notes.append(f"throughput: only {stored:,} of {n:,} recorded events and "
                         f"{count - before:,} new documents; throughput = stored / elapsed; "
                         "the rest was still queued during the latency phase")
    for eid in list(watch.wanted & watch.dead.keys())[:3]:
        res.notes.append(f"dead letter {eid}: {watch.dead[eid][:200]}")


async def kafka_limit(a: argparse.Namespace, w: Workload, run: str, res: Result) -> None:
    """(a) the same bytes through a fresh topic: produce while consuming, then consume alone."""
    n, topic = len(w.values), f"bench.raw.{run}"
    admin = AIOKafkaAdminClient(bootstrap_servers=a.kafka)
    await admin.start()
    await admin.create_topics([NewTopic(topic, a.partitions, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=a.kafka, **PRODUCER)
    await producer.start()

    async def consume_all() -> float:
        consumer = AIOKafkaConsumer(bootstrap_servers=a.kafka, **CONSUMER)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(a.partitions)])
            await consumer.seek_to_beginning()
            got, last = 0, time.monotonic()
            while got < n and time.monotonic() - last < a.stall:
                batch = await consumer.getmany(timeout_ms=500)
                if batch:
                    got, last = got + sum(len(v) for v in batch.values()), time.monotonic()
            if got < n:
                res.notes.append(f"kafka limit: consumed only {got:,} of {n:,}")
            return time.monotonic()
        finally:
            await consumer.stop()

    try:
        t0 = time.monotonic()
        reader = asyncio.create_task(consume_all())
        futures = [await producer.send(topic, v, key=k) for k, v in zip(w.keys, w.values,
                                                                         strict=True)]
        await asyncio.gather(*futures)
        produced = time.monotonic() - t0
        combined = await reader - t0
        t1 = time.monotonic()
        alone = await consume_all() - t1
    finally:
        await producer.stop()
        if a.external:  # tansu drops the connection on DeleteTopics; the embedded one is temporary
            try:
                await asyncio.wait_for(admin.delete_topics([topic]), 10)
            except Exception as exc:
                res.info.append(f"could not delete the raw topic {topic}: {exc!r}")
        await admin.close()
    res.values.update(limit_kafka=n / combined, limit_kafka_produce=n / produced,
                      limit_kafka_consume=n / alone)


async def store_limit(w: Workload, mongo: AsyncMongoClient[Any], run: str, res: Result) -> None:
    """(b) insert_many of interaction-shaped documents into a scratch collection, with the
    interactions collection's indexes (the limit), then without them (for reference)."""
    for key, indexes in (("limit_store", INTERACTIONS_INDEXES), ("limit_store_noindex", [])):
        docs = interaction_docs(w)
        coll = mongo[DB][f"bench_scratch_{run}"]
        if indexes:
            await coll.create_indexes(indexes)
        try:
            t0 = time.monotonic()
            for i in range(0, len(docs), INSERT_BATCH):
                await coll.insert_many(docs[i:i + INSERT_BATCH], ordered=False)
            res.values[key] = len(docs) / (time.monotonic() - t0)
        finally:
            await coll.drop()


def read_token(path: str) -> str:
    return Path(path).read_text().strip()


async def latency_phase(
    a: argparse.Namespace, bodies: list[bytes], watch: EventWatch, pids: list[int], res: Result
) -> None:
    n = len(bodies)
    token = read_token(a.token_file)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sched = [0.0] * n
    accepted: list[float | None] = [None] * n
    ids: list[str | None] = [None] * n
    errors: Counter[str] = Counter()
    sent = 0

    async def post(session: aiohttp.ClientSession, i: int) -> None:
        try:
            async with session.post(f"{a.api}/api/v1/messages", data=bodies[i]) as r:
                body = await r.read()
                if r.status == 202:
                    eid: str = orjson.loads(body)["id"]
                    accepted[i], ids[i] = time.monotonic(), eid
                    watch.want([eid])
                else:
                    errors[f"HTTP {r.status}"] += 1
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            errors[type(exc).__name__] += 1

    watch.reset()
    progress = WorkerProgress(a.worker)
    await progress.start()
    tick = asyncio.create_task(ticker("latency", lambda: (
        f"sent {sent:,}/{n:,} accepted {sum(x is not None for x in accepted):,} "
        f"recorded events seen {watch.hits:,}"), progress))
    meter = _stack.CpuMeter(pids)
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(connector=connector, headers=headers,
                                         timeout=timeout) as session:
            meter.start()
            tasks, lag, t0 = [], 0.0, time.monotonic()
            for i in range(n):
                sched[i] = t0 + i / a.rate
                if (delay := sched[i] - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                lag = max(lag, time.monotonic() - sched[i])
                tasks.append(asyncio.create_task(post(session, i)))
                sent += 1
            offered = n / max(time.monotonic() - t0, 1e-9)
            await asyncio.gather(*tasks)
        with contextlib.suppress(TimeoutError):  # a.drain s for the stragglers, no more
            await asyncio.wait_for(watch.wait(len(watch.wanted), a.drain), a.drain)
        res.cpu["latency"] = meter.stop()
        res.worker["latency"] = await progress.batches()
    finally:
        tick.cancel()
    lat, lat_b, api = [], [], []
    quarters: list[list[float]] = [[], [], [], []]  # by when the message was sent: drift
    for i in range(n):
        acc, eid = accepted[i], ids[i]
        if acc is None or eid is None:
            continue
        api.append((acc - sched[i]) * 1000)
        if eid in watch.arrived:
            lat.append((watch.arrived[eid] - acc) * 1000)
            lat_b.append((watch.broker_ts[eid] - acc) * 1000)
            quarters[i * 4 // n].append(lat[-1])
    res.values.update(
        p50_ms=pct(lat, 50), p99_ms=pct(lat, 99), max_ms=max(lat, default=None),
        first_quarter_p99_ms=pct(quarters[0], 99), last_quarter_p99_ms=pct(quarters[3], 99),
        p50_broker_ms=pct(lat_b, 50), p99_broker_ms=pct(lat_b, 99),
        api_p50_ms=pct(api, 50), api_p99_ms=pct(api, 99), api_max_ms=max(api, default=None),
        latency_sent=n, latency_accepted=len(api), lost=n - len(lat),
        watch_wait_ms=a.watch_wait,
        api_errors=sum(errors.values()), offered_rate=offered, max_send_lag_ms=lag * 1000,
        latency_dead=watch.dead_hits,
        latency_worker_stored=res.worker["latency"].get("stored") if a.worker else None)
    if errors:
        res.notes.append("latency: API errors " + ", ".join(f"{k} ×{v}" for k, v in
                                                            errors.most_common()))


# ============================================================================ report
def fmt(v: float | None, unit: str = "", digits: int = 0) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}{unit}"


def report(a: argparse.Namespace, res: Result) -> dict[str, Any]:
    v = res.values
    limit = min(v["limit_kafka"], v["limit_store"])
    v.update(limit=limit, ratio=v["throughput"] / limit, messages=a.messages,
             senders=a.senders, rate=a.rate, duration=a.duration)
    out = [
        "", f"omnihub ingest benchmark — {a.messages:,} messages from {a.senders:,} senders "
            f"(seed {a.seed}), {a.partitions} partitions, {os.cpu_count()} cores",
    ]
    if v.get("ready_s") is not None:
        out.append(f"  stack       ready in {v['ready_s']:.1f} s; idle RSS "
                   f"{v['idle_rss_mb']:.0f} MB (" + ", ".join(
                       f"{k} {m:.0f}" for k, m in v.pop("idle_rss_by", {}).items()) + ")")
    else:
        out.append("  stack       external (no ready time / RSS)")
    out += [
        f"  throughput  {fmt(v['throughput'], ' msg/s')}  ({v['stored']:,} stored in "
        f"{v['elapsed_s']:.1f} s; all produced and acked after {v['produce_acked_s']:.2f} s; "
        f"{v['dead']} dead letters)",
    ]
    for phase, b in res.worker.items():
        if b.get("batches"):
            out.append(f"              worker during {phase}: {b['batches']:.0f} batches of "
                       f"{b['size']:.0f} msgs, {b['seconds'] * 1000:,.0f} ms each from read to "
                       f"events acked, in flight {b['busy']:.0%} of the time (>100 %: the "
                       f"next batch is written while one's events are sent), writing to the "
                       f"store {b.get('writing', 0):.0%}")
    for phase, cpu in res.cpu.items():
        out.append(f"              CPU during {phase} (% of one core; {os.cpu_count()} cores): "
                   + ", ".join(f"{k} {p:.0f}" for k, p in cpu.items() if p >= 0.5))
    out += [
        f"  limit       {fmt(limit, ' msg/s')} = min(kafka, store)",
        f"    kafka     {fmt(v['limit_kafka'], ' msg/s')} produce+consume at once, first send "
        f"to last record (produce alone {fmt(v['limit_kafka_produce'])}/s acked, consume "
        f"alone {fmt(v['limit_kafka_consume'])}/s)",
        f"    store     {fmt(v['limit_store'], ' docs/s')} insert_many, {INSERT_BATCH}/batch, "
        f"ordered=False, same indexes as interactions (without them: "
        f"{fmt(v['limit_store_noindex'])}/s)",
        f"  ratio       {v['ratio']:.3f}  (throughput / limit)",
    ]
    if res.floor is not None:
        v.update(floor=res.floor.rate, floor_ratio=res.floor.rate / limit)
        out += res.floor.lines(limit)
    out += [
        f"  latency     {a.rate:g} msg/s for {a.duration:g} s via POST /api/v1/messages "
        f"(offered {v['offered_rate']:.1f}/s, max send lag {v['max_send_lag_ms']:.0f} ms)",
        f"              accepted→stored p50 {fmt(v['p50_ms'], ' ms')}, p99 "
        f"{fmt(v['p99_ms'], ' ms')}, max {fmt(v['max_ms'], ' ms')}  (seen by a consumer "
        f"with a {a.watch_wait} ms fetch wait; by the event's broker timestamp: "
        f"p50 {fmt(v['p50_broker_ms'], ' ms')}, p99 {fmt(v['p99_broker_ms'], ' ms')})",
        f"              p99 of the messages sent in the first quarter "
        f"{fmt(v['first_quarter_p99_ms'], ' ms')}, in the last "
        f"{fmt(v['last_quarter_p99_ms'], ' ms')}",
        f"              API 202 p50 {fmt(v['api_p50_ms'], ' ms', 1)}, p99 "
        f"{fmt(v['api_p99_ms'], ' ms', 1)}, max {fmt(v['api_max_ms'], ' ms', 1)}",
        f"              not stored within {a.drain:g} s: {v['lost']} of {v['latency_sent']:,}"
        f" ({v['api_errors']} API errors, {v['latency_dead']} dead letters; the worker had "
        f"stored {fmt(v['latency_worker_stored'])} by then)",
    ]
    out += [f"  note        {note}" for note in res.info]
    out += [f"  NOTE        {note}" for note in res.notes]
    print("\n".join(out))
    keys = ["throughput", "limit", "ratio", "p50_ms", "p99_ms", "max_ms", "first_quarter_p99_ms",
            "last_quarter_p99_ms", "p50_broker_ms", "p99_broker_ms", "watch_wait_ms",
            "messages", "senders",
            "rate", "duration", "ready_s", "idle_rss_mb", "limit_kafka", "limit_kafka_produce",
            "limit_kafka_consume", "limit_store", "limit_store_noindex", "api_p50_ms",
            "api_p99_ms", "lost", "api_errors", "elapsed_s", "stored", "dead", "offered_rate",
            "floor", "floor_ratio"]
    doc = {k: (round(v[k], 3) if isinstance(v.get(k), float) else v.get(k)) for k in keys}
    doc["cpu_throughput"] = {k: round(p, 1) for k, p in res.cpu.get("throughput", {}).items()}
    doc["worker_batch_s"] = {k: round(b["seconds"], 3) for k, b in res.worker.items()
                             if b.get("batches")}
    print(orjson.dumps(doc).decode(), flush=True)
    return doc


# ============================================================================ main
async def run(a: argparse.Namespace) -> int:
    res, run_id = Result(), uuid.uuid4().hex[:8]
    rng = random.Random(a.seed)
    t = time.monotonic()
    senders = make_senders(rng, a.senders)
    work = kafka_workload(rng, senders, a.messages, run_id)
    bodies = api_bodies(rng, senders, int(a.rate * a.duration), run_id)
    log(f"generated {a.messages:,} messages ({sum(map(len, work.values)) / a.messages:.0f} "
        f"bytes/event avg) and {len(bodies):,} API bodies in {time.monotonic() - t:.1f}s")

    stack: _stack.EmbeddedStack | None = None
    tmp: Path | None = None
    ok = False
    try:
        if a.api is None:
            tmp = Path(tempfile.mkdtemp(prefix="omnihub-bench-"))
            lo, hi = (int(x) for x in a.ports.split("-"))
            names = ["api", "worker", "kafka", "s3", "mongo", "smtp"]
            stack = _stack.EmbeddedStack(a.omnihub, tmp / "data",
                                         dict(zip(names, _stack.free_ports(6, lo, hi),
                                                  strict=True)), a.partitions)
            log(f"starting omnihub up in {tmp} …")
            info = await stack.start()
            a.api, a.token_file, a.kafka = info["api"], info["token_file"], info["kafka"]
            a.mongo, a.worker = info["mongo"], info.get("worker")
            log(f"ready in {stack.ready_s:.1f}s; idling {a.idle:g}s before measuring RSS")
            await asyncio.sleep(a.idle)
            rss, by_role = stack.rss_mb()
            res.values.update(ready_s=stack.ready_s, idle_rss_mb=rss, idle_rss_by=by_role)
        pids = (stack.pids() if stack else []) + [os.getpid()]

        mongo: AsyncMongoClient[Any] = AsyncMongoClient(a.mongo, tz_aware=True)
        watch = EventWatch(a.kafka, a.watch_wait)
        await watch.start()
        try:
            # the limit first: a throughput phase cut by --max-seconds leaves work queued
            log("limit (a): kafka, raw produce + consume")
            await kafka_limit(a, work, run_id, res)
            log("limit (b): store, insert_many")
            await store_limit(work, mongo, run_id, res)
            log(f"throughput: producing {a.messages:,} messages to {topics.INBOUND}")
            await throughput_phase(a, work, watch, mongo, pids, res)
            if not a.external:  # a running stack's collections hold more than this run's
                log("floor: writing the final documents once each, nothing else")
                res.floor = await _floor.measure(mongo[DB], res.values["stored"], run_id, log)
            log(f"throughput {res.values['throughput']:,.1f} msg/s; latency: {a.rate:g} msg/s "
                f"for {a.duration:g}s to {a.api}")
            await latency_phase(a, bodies, watch, pids, res)
        finally:
            await watch.stop()
            await mongo.close()
        report(a, res)
        ok = not res.notes and res.values["lost"] == 0
        return 0 if ok else 1
    finally:
        if stack is not None:
            log("stopping omnihub up …")
            log(f"stopped in {await stack.stop():.1f}s")
        if tmp is not None:
            if ok and not a.keep_data:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                log(f"data and logs kept in {tmp}/data (logs/ has each process's log)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/ingest.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 when everything sent was stored, 1 otherwise (see NOTE lines).")
    g = p.add_argument_group("workload")
    g.add_argument("--messages", type=int, default=20_000, metavar="N",
                   help="messages in the throughput and limit phases (default 20000)")
    g.add_argument("--senders", type=int, metavar="S",
                   help="distinct senders (customers) the messages come from (default N/4)")
    g.add_argument("--seed", type=int, default=1, help="seed of the generator (default 1)")
    g = p.add_argument_group("latency phase")
    g.add_argument("--rate", type=float, default=200.0,
                   help="messages per second POSTed to the API, open loop (default 200)")
    g.add_argument("--duration", type=float, default=15.0,
                   help="seconds the latency phase offers that rate (default 15)")
    g.add_argument("--drain", type=float, default=10.0, help="seconds after the phase a "
                   "message may still be stored before it counts as lost (default 10)")
    g = p.add_argument_group("embedded stack (started unless --api is given)")
    g.add_argument("--ports", default="18000-18999",
                   help="range to pick the stack's 5 free ports from (default 18000-18999)")
    g.add_argument("--partitions", type=int, default=EMBEDDED_PARTITIONS,
                   help="partitions of the stack's topics and of the raw topic (default 1, "
                   "as omnihub up)")
    g.add_argument("--idle", type=float, default=3.0,
                   help="seconds to idle after ready before taking the RSS (default 3)")
    g.add_argument("--keep-data", action="store_true",
                   help="keep the temporary data folder and logs (kept anyway on failure)")
    g.add_argument("--omnihub", default=str(Path(sys.executable).with_name("omnihub")),
                   help="the omnihub executable (default: beside this Python)")
    g = p.add_argument_group("running stack (all four together; its RSS is not measured)")
    g.add_argument("--api", metavar="URL", help="its API, e.g. http://127.0.0.1:8400")
    g.add_argument("--token-file", metavar="F", help="file holding its API token")
    g.add_argument("--kafka", metavar="H:P", help="its Kafka bootstrap server")
    g.add_argument("--mongo", metavar="URI", help="its MongoDB URI (retryWrites=false)")
    g.add_argument("--worker", metavar="URL",
                   help="its worker's base URL (serving /metrics), for batch figures (optional)")
    p.add_argument("--watch-wait", type=int, default=20, metavar="MS",
                   help="fetch wait of the consumer that sees the interaction.recorded events "
                   "(default 20). tansu holds a fetch until near the end of its wait, so this "
                   "consumer's hop is part of every latency figure: with aiokafka's default "
                   "500 ms it added ~180 ms at p50 and ~220 ms at p99 (measured at 200 msg/s), "
                   "with 20 ms ~45 ms at p50 for ~2 %% of a core more in tansu")
    p.add_argument("--stall", type=float, default=300.0,
                   help="give a phase up after this many seconds without progress (default 300)")
    p.add_argument("--max-seconds", type=float, default=0.0, metavar="S",
                   help="end the throughput phase after S seconds even if not all is stored, "
                   "and report what was (default 0: no limit)")
    a = p.parse_args(argv)
    external = [a.api, a.token_file, a.kafka, a.mongo]
    if any(external) and not all(external):
        p.error("--api, --token-file, --kafka and --mongo go together")
    if a.messages < 1 or a.rate <= 0 or a.duration <= 0:
        p.error("--messages, --rate and --duration must be positive")
    a.senders = a.senders or max(1, a.messages // 4)
    a.external = a.api is not None
    return a


def main() -> int:
    a = parse_args()
    loop = asyncio.new_event_loop()
    main_task = loop.create_task(run(a))
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C / kill: cancel, so `finally` stops
        loop.add_signal_handler(sig, main_task.cancel)  # the stack
    try:
        return loop.run_until_complete(main_task)
    except asyncio.CancelledError:
        log("interrupted")
        return 130
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
