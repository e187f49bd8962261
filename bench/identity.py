"""Identity-resolution benchmark: does omnihub make one customer of one person, and never one
customer of two people, and how fast compared with its store's limit?

One run against its own `omnihub up` (6 free ports from --ports):

  1. a seeded population with ground truth: Persian and English names (a few hundred, shared
     by many), phones in every written form (Persian ۰-۹ and Arabic-Indic ٠-٩ digits, +98, 0098,
     98, 09, 9, spaces, dashes), emails with case noise, Telegram, web chat and CRM ids;
     messages on sms/email/telegram/webchat/api over six weeks, pre-chat identifiers typed in
     web chat (`claimed`, ~3 % another person's), ~1 % garbage values to be dead-lettered;
  2. truth: one person's messages whose channel-assured identifiers are connected through
     co-occurrence in a message are one customer (union-find); two people never are;
  3. resolution: every message produced to omnihub.inbound.v1 as a connector does, timed
     until the worker has stored or dead-lettered all (then checked against MongoDB and the
     dead-letter topic); after --deadline the worker is paused and what it did is measured;
  4. quality from MongoDB: pairwise precision/recall of "same customer" over messages (from
     contingency counts), false merges, merges, open merge suggestions by cause; and the
     time of one batch's reads (the product's store functions) on the final store;
  5. limit, same database: bulk_write of UpdateOne(upsert) × 500 (the limit), insert_many,
     `$in` lookups by _id; then the store floor (bench/_floor.py): the time to insert_many,
     once each, the documents the resolution phase left behind;
  6. GET /api/v1/customers?identifier=<raw form>, sequential and 16 at once: p50/p99, misses.

It prints a summary, then, last, one JSON line. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any

import _floor
import _stack  # before the rest: it moves bench/ to the end of sys.path
import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient, UpdateOne

from connectors.base import inbound_key
from hub.embedded import EMBEDDED_PARTITIONS
from pipeline import contract as c
from pipeline import topics
from store import claims, conversations, customers, identities, interactions, merges
from store.mongo import INDEXES, Store
from unify.identifiers import InvalidIdentifier, normalize

DB = "omnihub"
BATCH = 500
PRODUCER = {"acks": "all", "enable_idempotence": False, "linger_ms": 10,
            "max_batch_size": 256 * 1024, "request_timeout_ms": 30000}
INTERACTIONS_INDEXES = INDEXES["interactions"]  # the limit pays what ingest pays


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ============================================================================ population
FA_FIRST = [("علی", "ali"), ("محمد", "mohammad"), ("زهرا", "zahra"), ("فاطمه", "fatemeh"),
            ("مریم", "maryam"), ("حسین", "hossein"), ("رضا", "reza"), ("سارا", "sara"),
            ("نرگس", "narges"), ("امیر", "amir"), ("مهدی", "mahdi"), ("نیلوفر", "niloufar"),
            ("پریسا", "parisa"), ("کیان", "kian"), ("شیرین", "shirin"), ("بهرام", "bahram"),
            ("آرش", "arash"), ("الهام", "elham"), ("یاسمن", "yasaman"), ("حمید", "hamid")]
FA_LAST = [("رضایی", "rezaei"), ("محمدی", "mohammadi"), ("حسینی", "hosseini"),
           ("احمدی", "ahmadi"), ("کریمی", "karimi"), ("موسوی", "mousavi"), ("جعفری", "jafari"),
           ("صادقی", "sadeghi"), ("رحیمی", "rahimi"), ("نوری", "nouri"), ("قاسمی", "ghasemi"),
           ("تهرانی", "tehrani"), ("شریفی", "sharifi"), ("کاظمی", "kazemi"), ("اکبری", "akbari")]
EN_FIRST = ["Ali", "Sara", "John", "Maryam", "Reza", "Emily", "David", "Neda", "Omid", "Laura",
            "Kian", "Anna", "Babak", "Mina", "Peter"]
EN_LAST = ["Rezaei", "Smith", "Karimi", "Johnson", "Ahmadi", "Brown", "Moradi", "Taylor",
           "Hosseini", "Miller", "Sadeghi", "Wilson"]
TEXTS = ["سلام، سفارش من هنوز به دستم نرسیده است.", "مبلغ دو بار از حساب من کسر شده است.",
         "لطفاً با من تماس بگیرید، عجله دارم.", "کد تخفیف روی سبد خرید اعمال نمی‌شود.",
         "Hi, my order still has not arrived.", "I was charged twice for the same invoice.",
         "Please call me back as soon as possible.", "The discount code is rejected."]
DOMAINS = ["gmail.com", "yahoo.com", "example.ir", "chmail.ir", "outlook.com"]
MOBILE = ["912", "935", "919", "901", "990", "939", "921", "910", "936", "930", "917", "991"]
FA = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
AR = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
ACCOUNTS = {"sms": "sms:30001234", "email": "support@shop.example", "telegram": "@shop_bot",
            "webchat": "site:shop.example", "api": "crm"}
CHANNEL_WEIGHT = {"sms": 0.30, "email": 0.25, "telegram": 0.20, "webchat": 0.15, "api": 0.10}


@dataclass
class Person:
    pid: int
    name: str
    phone: str | None  # national significant number, 10 digits: 912…
    emails: list[str]  # lower-case
    telegram: str | None
    visitors: list[str]
    crm: str

    def ids(self) -> list[str]:
        """Every normalised identifier this person owns."""
        out = [f"phone:+98{self.phone}"] if self.phone else []
        return out + [f"email:{e}" for e in self.emails] + (
            [f"telegram:{self.telegram}"] if self.telegram else []) + [
            f"webchat:{v}" for v in self.visitors] + [f"api:{self.crm}"]


def phone_form(rng: random.Random, d: str) -> str:
    sp = f"{d[:3]} {d[3:6]} {d[6:]}"
    return rng.choice([
        f"0{d}", f"+98{d}", f"0098{d}", f"98{d}", d, f"0{sp}".translate(FA), f"0{d}".translate(AR),
        f"0{d[:3]}-{d[3:6]}-{d[6:]}", f"+98 {sp}", f"\u200f+98 {d[:3]}-{d[3:6]}-{d[6:]}",
        f"(0{d[:3]}) {d[3:6]} {d[6:]}", f"+98{d}".translate(AR), f"0098 {d}".translate(FA),
        f"{d}".translate(FA), f"98-{d[:3]}-{d[3:]}"])


def email_form(rng: random.Random, e: str) -> str:
    local, _, domain = e.partition("@")
    titled = ".".join(p.capitalize() for p in local.split(".")) + "@" + \
        domain.rsplit(".", 1)[0].capitalize() + "." + domain.rsplit(".", 1)[1].upper()
    noisy = "".join(ch.upper() if rng.random() < 0.3 else ch for ch in e)
    return rng.choice([e, e, titled, noisy, e.upper(), f"<{titled}>", f" {e} "])


def id_form(rng: random.Random, ident: str) -> tuple[str, str]:
    """(kind, a raw written form) of a normalised identifier."""
    kind, _, value = ident.partition(":")
    if kind == "phone":
        return kind, phone_form(rng, value.removeprefix("+98"))
    if kind == "email":
        return kind, email_form(rng, value)
    return kind, value


GARBAGE = {
    "phone": ["0912-abc-{n}", "09{n}", "+98 21", "۰۹۱۲", "{n}{n}{n}", "call me", "0912 345 6789 0",
              "+1 000"],
    "email": ["{l}@", "{l}.example.com", "{l}@@gmail.com", "{l} @yahoo.com", "@gmail.com", "{l}@x"],
    "telegram": ["-100{n}", "@{l}", "0"],
}


def garbage(rng: random.Random, kind: str) -> str:
    return rng.choice(GARBAGE[kind]).format(n=rng.randrange(10**5), l=f"user{rng.randrange(999)}")


def make_people(rng: random.Random, count: int) -> list[Person]:
    names = [(f"{f} {la}", f"{fl}.{ll}") for f, fl in FA_FIRST for la, ll in FA_LAST] + [
        (f"{f} {la}", f"{f}.{la}".lower()) for f in EN_FIRST for la in EN_LAST]
    weights = [1 / (i + 1) ** 0.6 for i in range(len(names))]  # popular names are shared a lot
    used: set[str] = set()

    def unique(make: Callable[[], str]) -> str:
        while (v := make()) in used:
            pass
        used.add(v)
        return v

    def email(latin: str) -> str:
        local = rng.choice([latin, latin.replace(".", ""), latin[0] + latin.split(".")[1]])
        return f"{local}{rng.choice(['', rng.randrange(1, 999)])}@{rng.choice(DOMAINS)}"

    people = []
    for pid in range(count):
        name, latin = rng.choices(names, weights)[0]
        phone = (unique(lambda: rng.choice(MOBILE) + f"{rng.randrange(10**7):07d}")
                 if rng.random() < 0.9 else None)
        n_mail = rng.choices([0, 1, 2], [0.3, 0.5, 0.2])[0] or (0 if phone else 1)
        emails = [unique(partial(email, latin)) for _ in range(n_mail)]
        tg = unique(lambda: str(rng.randrange(10**8, 8 * 10**9))) if rng.random() < 0.35 else None
        visitors = [unique(lambda: uuid.UUID(int=rng.getrandbits(128)).hex[:20])
                    for _ in range(rng.choice([1, 1, 2, 3]) if rng.random() < 0.3 else 0)]
        people.append(Person(pid, name, phone, emails, tg, visitors, f"CRM-{pid:07d}"))
    return people


@dataclass
class Workload:
    run: str
    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # event ids
    person: list[int] = field(default_factory=list)
    assured: list[tuple[str, ...]] = field(default_factory=list)  # valid channel-assured ids
    channels: Counter[str] = field(default_factory=Counter)
    garbage: int = 0  # garbage values written (channel-assured or claimed)
    claims: int = 0  # claimed identifiers typed in pre-chat forms
    false_claims: int = 0  # … that were another person's
    check_fail: list[str] = field(default_factory=list)  # normaliser disagrees with generator

    @property
    def dead(self) -> int:
        """Messages without a valid channel-assured identifier: the pipeline must dead-letter."""
        return sum(not a for a in self.assured)

    def index(self, source_id: str) -> int | None:
        prefix = f"idb-{self.run}-"
        return int(source_id[len(prefix):]) if source_id.startswith(prefix) else None


def make_workload(rng: random.Random, people: list[Person], n: int, run: str) -> Workload:
    """``n`` messages in time order over six weeks; everyone writes, a heavy tail writes more."""
    w, s = Workload(run), len(people)
    pareto = [min(rng.paretovariate(1.3), 40.0) for _ in range(s)]
    seq = list(range(min(s, n))) + rng.choices(range(s), weights=pareto, k=max(n - s, 0))
    rng.shuffle(seq)
    start = datetime.now(UTC) - timedelta(weeks=6)
    times = sorted(rng.uniform(0, 6 * 7 * 86400) for _ in range(n))
    checked: dict[tuple[str, str], str | None] = {}

    def written(ident: str | None, kind: str, raw: str) -> str:
        """The generator's own check of its data against unify.identifiers."""
        if (kind, raw) not in checked:
            try:
                checked[kind, raw] = normalize(kind, raw)
            except InvalidIdentifier:
                checked[kind, raw] = None
            if checked[kind, raw] != ident:
                w.check_fail.append(f"{kind} {raw!r}: is {ident}, normalised {checked[kind, raw]}")
        return raw

    def contact(p: Person) -> list[str]:
        return [x for x in p.ids() if x.startswith(("phone:", "email:"))]

    for i, pi in enumerate(seq):
        p = people[pi]
        chans = [ch for ch, ok in (("sms", p.phone), ("email", p.emails), ("telegram", p.telegram),
                                   ("webchat", p.visitors), ("api", True)) if ok]
        ch = rng.choices(chans, [CHANNEL_WEIGHT[x] for x in chans])[0]
        idents: list[str] = []  # normalised channel-assured identifiers the message carries
        claimed: list[c.Identifier] = []
        name: str | None = p.name
        if ch == "sms":
            idents, name, thread = [f"phone:+98{p.phone}"], None, f"30001234:0{p.phone}"
        elif ch == "email":
            idents, thread = [f"email:{rng.choice(p.emails)}"], f"<t{p.pid}.{rng.randrange(3)}@m>"
        elif ch == "telegram":
            idents, thread = [f"telegram:{p.telegram}"], str(p.telegram)
            if p.phone and rng.random() < 0.25:  # shared their contact: Telegram vouches for it
                idents.append(f"phone:+98{p.phone}")
        elif ch == "webchat":  # visitor id signed with the site's HMAC key: channel-assured
            v = rng.choice(p.visitors)
            idents, thread = [f"webchat:{v}"], f"ws-{v}-{rng.randrange(4)}"
            name = p.name if rng.random() < 0.5 else None
            if rng.random() < 0.4:  # pre-chat form: typed, so only `claimed`
                other = people[rng.randrange(s)] if rng.random() < 0.03 else p
                if target := contact(other):
                    want: str | None = rng.choice(target)
                    kind, raw = id_form(rng, want or "")
                    if rng.random() < 0.01:
                        want, raw = None, garbage(rng, kind)
                        w.garbage += 1
                    claimed.append(c.Identifier(kind=kind, value=written(want, kind, raw),  # type: ignore[arg-type]
                                                assurance="claimed"))
                    w.claims += 1
                    w.false_claims += other is not p and want is not None
        else:  # api: an authenticated CRM pushes what it knows, all channel-assured
            idents = [f"api:{p.crm}"] * (rng.random() < 0.5) + [
                f"phone:+98{p.phone}"] * bool(p.phone) + [f"email:{e}" for e in p.emails[:1]]
            if len(p.emails) > 1 and rng.random() < 0.3:
                idents.append(f"email:{p.emails[1]}")
            thread = f"crm-ticket-{p.pid}-{rng.randrange(3)}"
        sender, valid = [], []
        bad = rng.randrange(len(idents)) if rng.random() < 0.011 else -1
        for k, ident in enumerate(idents):
            kind, raw = id_form(rng, ident)
            if k == bad and kind in GARBAGE:
                raw, ident = garbage(rng, kind), ""
                w.garbage += 1
            sender.append(c.Identifier(kind=kind, value=written(ident or None, kind, raw)))  # type: ignore[arg-type]
            valid += [ident] if ident else []
        m = c.Message(
            channel=ch, account=ACCOUNTS[ch], source_id=f"idb-{run}-{i:07d}",  # type: ignore[arg-type]
            sender=sender + claimed, display_name=name, thread=thread,
            occurred_at=start + timedelta(seconds=times[i]),
            subject="Order problem" if ch == "email" else None, text=rng.choice(TEXTS))
        w.keys.append(inbound_key(m))
        w.values.append(c.message_event(m, source=f"/omnihub/connectors/{ch}").to_json())
        w.ids.append(m.event_id)
        w.person.append(p.pid)
        w.assured.append(tuple(dict.fromkeys(valid)))
        w.channels[ch] += 1
    return w


def truth_clusters(w: Workload, processed: Iterable[int]) -> dict[int, int]:
    """Ground-truth cluster of each processed message: union-find over the channel-assured
    identifiers seen together in a processed message (evidence the pipeline has not seen yet
    cannot count). Identifiers are unique to a person, so a cluster never spans two people; a
    claimed identifier never joins anything."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    todo = [i for i in processed if w.assured[i]]
    for i in todo:
        ids = w.assured[i]
        for other in ids[1:]:
            if (ra := find(ids[0])) != (rb := find(other)):
                parent[rb] = ra
    label: dict[str, int] = {}
    return {i: label.setdefault(find(w.assured[i][0]), len(label)) for i in todo}


# ============================================================================ measuring
def pct(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None when there is nothing to rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-p * len(ordered) // 100)) - 1))]


def pairs(n: int) -> int:
    return n * (n - 1) // 2


@dataclass
class Result:
    values: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    floor: _floor.Floor | None = None


async def worker_metrics(url: str) -> dict[str, float]:
    """The worker's ingest counters from its Prometheus /metrics (empty if unreachable):
    records stored / dead-lettered (counted once a batch's writes and events are acked) and
    batch sizes and seconds."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                s.get(f"{url}/metrics") as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return {}
    lines = [ln.partition(" ") for ln in text.splitlines()]
    out = {k.removeprefix("omnihub_ingest_").replace('events_total{outcome="', "").rstrip('"}'):
           float(v) for k, _, v in lines if k.startswith("omnihub_ingest_") and
           k.endswith(("_sum", "_count", '"stored"}', '"deadletter"}'))}
    stage = 'omnihub_ingest_stage_seconds_sum{stage="'  # the steps of a batch: "stage_resolve"
    out.update(("stage_" + k.removeprefix(stage).rstrip('"}'), float(v))
               for k, _, v in lines if k.startswith(stage))
    return out


async def dead_letters(bootstrap: str, ids: set[str]) -> Counter[str]:
    """Stage of each of our events on the dead-letter topic (read once, start to end)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=200)
    await consumer.start()
    stages: dict[str, str] = {}
    try:
        tp = TopicPartition(topics.DEADLETTER, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning()
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            for r in (await consumer.getmany(timeout_ms=1000)).get(tp, []):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    data = orjson.loads(r.value or b"")["data"]
                    eid = orjson.loads(base64.b64decode(data["value_b64"]))["id"]
                    if eid in ids:
                        stages[eid] = data["stage"]
    finally:
        await consumer.stop()
    return Counter(stages.values())


# ============================================================================ phases
async def resolution_phase(a: argparse.Namespace, w: Workload, mongo: AsyncMongoClient[Any],
                           pids: list[int], res: Result) -> None:
    """Produce everything like a connector; time until the worker has stored or dead-lettered
    every message (its /metrics, polled each second: cheap, unlike counting documents, which
    SecantusDB does by scanning the collection); then check MongoDB's count once."""
    n = len(w.ids)
    m0 = await worker_metrics(a.worker)
    res.values["incomplete"] = False
    producer = AIOKafkaProducer(bootstrap_servers=a.kafka, **PRODUCER)
    await producer.start()
    meter = _stack.CpuMeter(pids)
    stored = dead = 0
    t0 = time.monotonic()
    curve: list[tuple[float, int]] = [(0.0, 0)]

    async def poll() -> None:
        nonlocal stored, dead
        while True:
            if m := await worker_metrics(a.worker):  # labelled counters appear when first used
                stored = int(m.get("stored", 0) - m0.get("stored", 0))
                dead = int(m.get("deadletter", 0) - m0.get("deadletter", 0))
            curve.append((time.monotonic() - t0, stored + dead))
            await asyncio.sleep(1.0)

    async def progress() -> None:
        last_t, last = t0, 0
        while True:
            await asyncio.sleep(2.0)
            now = time.monotonic()
            log(f"[resolve {now - t0:5.1f}s] stored {stored:,} + dead letters {dead:,} of {n:,} "
                f"({(stored + dead - last) / (now - last_t):,.0f} msg/s now)")
            last_t, last = now, stored + dead

    tasks = [asyncio.create_task(poll()), asyncio.create_task(progress())]
    meter.start()
    try:
        futures = [await producer.send(topics.INBOUND, v, key=k)
                   for k, v in zip(w.keys, w.values, strict=True)]
        await asyncio.gather(*futures)
        acked = time.monotonic() - t0
        prev, prev_t = -1, time.monotonic()
        while stored + dead < n:
            if stored + dead != prev:
                prev, prev_t = stored + dead, time.monotonic()
            elif time.monotonic() - prev_t > a.stall:
                res.notes.append(f"resolution: no progress for {a.stall:.0f}s; gave up at "
                                 f"{stored:,} stored + {dead:,} dead of {n:,}")
                break
            if time.monotonic() - t0 > a.deadline:
                res.notes.append(f"INCOMPLETE: --deadline {a.deadline:.0f}s passed with "
                                 f"{stored + dead:,} of {n:,} messages processed; the worker was "
                                 "paused then: quality and lookups are over those only")
                res.values["incomplete"] = True
                break
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - t0
    finally:
        for task in tasks:
            task.cancel()
        await producer.stop()
    res.cpu = meter.stop()
    m1 = await worker_metrics(a.worker)
    if batches := m1.get("batch_seconds_count", 0) - m0.get("batch_seconds_count", 0):
        busy = m1["batch_seconds_sum"] - m0.get("batch_seconds_sum", 0)
        size = m1["batch_size_sum"] - m0.get("batch_size_sum", 0)
        res.values.update(worker_batches=int(batches), worker_busy=busy / elapsed,
                          worker_batch_s=busy / batches, worker_batch_mean=size / batches)
        steps = {k.removeprefix("stage_"): m1[k] - m0.get(k, 0.0) for k in m1
                 if k.startswith("stage_") and k not in ("stage_write", "stage_publish")}
        if write := m1.get("stage_write", 0.0) - m0.get("stage_write", 0.0):
            # where the store part of a batch goes; the rest of write is the worker's own work
            res.values["worker_steps"] = {k: t / write for k, t in
                                          sorted(steps.items(), key=lambda kv: -kv[1])}
            res.values["worker_write_s"] = write
    done = stored + dead
    curve.append((elapsed, done))
    q1 = next((d for t, d in curve if t >= elapsed / 4), done)
    q3_t, q3 = next(((t, d) for t, d in curve if t >= elapsed * 3 / 4), (elapsed, done))
    res.values.update(rate_q1=q1 / (elapsed / 4), rate_q4=(done - q3) / max(elapsed - q3_t, 1e-9),
                      throughput=done / elapsed, elapsed_s=elapsed, produce_acked_s=acked,
                      stored=stored, dead_lettered=dead)


async def check_counts(a: argparse.Namespace, w: Workload, mongo: AsyncMongoClient[Any],
                       res: Result) -> None:
    """What the worker's counters said, against MongoDB and the dead-letter topic."""
    v = res.values
    v["dead_stages"] = dict(await dead_letters(a.kafka, set(w.ids)))
    if v["incomplete"]:  # paused mid-batch: its writes may be ahead of the counters
        return
    if sum(v["dead_stages"].values()) != v["dead_lettered"]:
        res.notes.append(f"worker counted {v['dead_lettered']:,} dead letters, the topic holds "
                         f"{sum(v['dead_stages'].values()):,} of this run's messages")
    docs = await mongo[DB]["interactions"].count_documents({})
    if docs != v["stored"]:
        res.notes.append(f"worker counted {v['stored']:,} stored messages, interactions holds "
                         f"{docs:,} documents")


async def quality(w: Workload, mongo: AsyncMongoClient[Any],
                  res: Result) -> tuple[dict[int, str], dict[str, set[str]]]:
    """Compare MongoDB's customers with the truth over the messages stored; returns the live
    customer of each stored message and identifier → the live customers holding its messages.

    Recall counts the links that the evidence in the *stored* messages demands; precision
    accepts every link that channel-assured evidence *anywhere in the workload* supports. The
    two truths are the same once everything is processed; on an INCOMPLETE run a link made by
    a message whose interaction is not written yet (its merge comes first) is not an error."""
    db = mongo[DB]
    merged = {d["_id"]: d.get("merged_into")
              async for d in db["customers"].find({}, {"merged_into": 1})}

    def live(cid: str) -> str:
        for _ in range(64):  # reads follow tombstones, as the API does
            if not merged.get(cid):
                break
            cid = merged[cid]
        return cid

    customer_of: dict[int, str] = {}
    async for d in db["interactions"].find({}, {"source_id": 1, "customer_id": 1}):
        if (i := w.index(d["source_id"])) is not None:
            customer_of[i] = live(d["customer_id"])
    truth = truth_clusters(w, customer_of)
    supported = truth_clusters(w, range(len(w.ids)))
    cells: Counter[tuple[int, str]] = Counter()
    cells_ok: Counter[tuple[int, str]] = Counter()
    size_true: Counter[int] = Counter()
    size_cust: Counter[str] = Counter()
    people_of: dict[str, set[int]] = {}
    ident_cust: dict[str, set[str]] = {}
    for i, cl in truth.items():
        cid = customer_of[i]
        cells[cl, cid] += 1
        cells_ok[supported[i], cid] += 1
        size_true[cl] += 1
        size_cust[cid] += 1
        people_of.setdefault(cid, set()).add(w.person[i])
        for ident in w.assured[i]:
            ident_cust.setdefault(ident, set()).add(cid)
    tp, tp_ok = sum(map(pairs, cells.values())), sum(map(pairs, cells_ok.values()))
    pred, true = sum(map(pairs, size_cust.values())), sum(map(pairs, size_true.values()))
    wrong = {pr for ps in people_of.values() for pr in combinations(sorted(ps), 2)}
    parts = Counter(cl for cl, _ in cells)
    cause: Counter[str] = Counter()
    async for s in db["merge_suggestions"].find({"state": "open"}):
        persons = {p for cid in s["customers"] for p in people_of.get(live(cid), ())}
        cause["different people" if len(persons) > 1 else
              "same person" if persons else "unknown"] += 1
    states = Counter([d["state"] async for d in db["merges"].find({}, {"state": 1})])
    res.values.update(
        precision=tp_ok / pred if pred else 1.0, recall=tp / true if true else 1.0,
        true_pairs=true, predicted_pairs=pred, true_clusters=len(size_true),
        customers=len(size_cust), split_clusters=sum(k > 1 for k in parts.values()),
        false_merges=sum(len(ps) > 1 for ps in people_of.values()), false_merge_pairs=len(wrong),
        merges=states.get("done", 0), merge_states=dict(states),
        suggestions=sum(cause.values()), suggestions_false_claims=cause["different people"],
        suggestions_same_person=cause["same person"], suggestions_unknown=cause["unknown"],
        unexpected_stored=len(customer_of) - len(truth),
        missing=len(w.ids) - w.dead - len(truth),
        people_seen=len(set(map(w.person.__getitem__, truth))), customer_docs=len(merged),
        tombstones=sum(bool(v) for v in merged.values()))
    return customer_of, ident_cust


async def batch_reads(w: Workload, customer_of: dict[int, str], mongo: AsyncMongoClient[Any],
                      rng: random.Random, res: Result) -> None:
    """Time the reads the worker makes for one batch (pipeline/agents/ingest.py, resolve.py),
    with the product's own store functions, on the data as the run left it: which of them
    grows with the store is what bends the throughput curve."""
    store = Store(mongo, mongo[DB])
    sample = rng.sample(sorted(customer_of), min(BATCH, len(customer_of)))
    idents = [x for i in sample for x in w.assured[i]]
    cids, eids = [customer_of[i] for i in sample], [w.ids[i] for i in sample]
    data = [orjson.loads(w.values[i])["data"] for i in sample]
    keys = [(cid, d["channel"], d["thread"]) for cid, d in zip(cids, data, strict=True)]

    async def trigger() -> list[Any]:  # resolve.py: merges of a replayed batch
        query = {"trigger": {"$in": eids}, "state": {"$in": ["done", "undone"]}}
        return [d async for d in store.merges.find(query)]

    reads: dict[str, Callable[[], Any]] = {
        "identities.lookup": lambda: identities.lookup(store, idents),
        "merges.roots": lambda: merges.roots(store, cids),
        "customers.infos": lambda: customers.infos(store, cids),
        "claims.claimants": lambda: claims.claimants(store, idents),
        "merges by trigger": trigger,
        "interactions.stored": lambda: interactions.stored(store, eids),
        "conversations.by_customers": lambda: conversations.by_customers(
            store, {k[0] for k in keys}),
    }
    took = {}
    for name, read in reads.items():
        t0 = time.perf_counter()
        await read()
        took[name] = (time.perf_counter() - t0) * 1000
    res.values["batch_reads_ms"] = dict(sorted(took.items(), key=lambda kv: -kv[1]))
    res.values["batch_reads_n"] = len(sample)


def interaction_docs(w: Workload, limit: int) -> list[dict[str, Any]]:
    """Documents shaped like the worker's (pipeline/agents/ingest.py _interaction_doc)."""
    now, docs = datetime.now(UTC), []
    for value, eid, assured in zip(w.values, w.ids, w.assured, strict=True):
        if not assured:
            continue
        if len(docs) == limit:
            break
        m = orjson.loads(value)["data"]
        docs.append({
            "_id": eid, "customer_id": c.derived_id(eid, "customer"),
            "conversation_id": c.derived_id(eid, "conversation"), "channel": m["channel"],
            "direction": m["direction"], "account": m["account"], "source_id": m["source_id"],
            "thread": m["thread"], "sender": list(assured), "display_name": m["display_name"],
            "occurred_at": datetime.fromisoformat(m["occurred_at"]), "received_at": now,
            "subject": m["subject"], "text": m["text"], "html": None, "attachments": [],
            "call": None})
    return docs


async def store_limit(w: Workload, mongo: AsyncMongoClient[Any], size: int,
                      res: Result) -> None:
    """Raw work on the same server, into scratch collections with the interactions' indexes:
    bulk upserts (the limit) and insert_many, 500 a batch, unordered; then ``$in`` lookups of
    those documents by ``_id``, 500 and 50 a query (the resolver's other basic operation)."""
    docs = interaction_docs(w, size)
    ids = [d["_id"] for d in docs]
    ops = [UpdateOne({"_id": d["_id"]}, {"$setOnInsert": d}, upsert=True) for d in docs]

    async def lookups(coll: Any, i: int, size: int) -> None:
        async for _ in coll.find({"_id": {"$in": ids[i:i + size]}}, {"_id": 1}):
            pass

    steps: list[tuple[str, int, Callable[[Any, int], Any]]] = [
        ("upsert", BATCH, lambda coll, i: coll.bulk_write(ops[i:i + BATCH], ordered=False)),
        ("in500", BATCH, lambda coll, i: lookups(coll, i, BATCH)),
        ("in50", 50, lambda coll, i: lookups(coll, i, 50)),
        ("insert", BATCH, lambda coll, i: coll.insert_many(docs[i:i + BATCH], ordered=False)),
    ]
    scratch = mongo[DB][f"bench_scratch_{w.run}"]
    try:
        for name, size, step in steps:
            if name == "insert":
                await scratch.drop()
            await scratch.create_indexes(INTERACTIONS_INDEXES)
            t0 = time.monotonic()
            for i in range(0, len(docs), size):
                await step(scratch, i)
            res.values[f"limit_{name}"] = len(docs) / (time.monotonic() - t0)
            log(f"limit: {name} {res.values[f'limit_{name}']:,.0f} docs/s")
    finally:
        await scratch.drop()
    v = res.values
    v["limit"] = v["limit_upsert"]
    # the resolver's lookups go in small chunks (store.mongo.IN_CHUNK): take the faster size
    v["limit_resolve"] = 1 / (1 / v["limit_upsert"] + 1 / max(v["limit_in500"], v["limit_in50"]))


def lookup_sample(rng: random.Random, ident_cust: dict[str, set[str]],
                  n: int) -> list[tuple[str, set[str]]]:
    """(raw form, right customers) for identifiers the pipeline saw; phones and emails mostly,
    written as people type them (bare: the API guesses the kind), the others with kind:."""
    by_kind: dict[str, list[str]] = {}
    for ident in sorted(ident_cust):
        by_kind.setdefault(ident.split(":", 1)[0], []).append(ident)
    weights = {"phone": 45, "email": 40, "telegram": 8, "webchat": 4, "api": 3}
    kinds = [k for k in weights if k in by_kind]
    out = []
    for kind in rng.choices(kinds, [weights[k] for k in kinds], k=n):
        ident = rng.choice(by_kind[kind])
        raw = id_form(rng, ident)[1]
        out.append((raw if kind in ("phone", "email") else f"{kind}:{raw}", ident_cust[ident]))
    return out


async def lookup_phase(a: argparse.Namespace, sample: list[tuple[str, set[str]]],
                       concurrency: int) -> tuple[list[float], Counter[str]]:
    """GET /api/v1/customers?identifier=… for each sample; latencies in ms and misses by cause."""
    headers = {"Authorization": f"Bearer {a.token}"}
    lat: list[float] = []
    miss: Counter[str] = Counter()
    todo = iter(sample)

    async def one(session: aiohttp.ClientSession) -> None:
        for raw, right in todo:
            t = time.perf_counter()
            try:
                async with session.get(f"{a.api}/api/v1/customers",
                                       params={"identifier": raw}) as r:
                    body = await r.read()
                lat.append((time.perf_counter() - t) * 1000)
                if r.status != 200:
                    miss[f"HTTP {r.status}"] += 1
                elif len(right) > 1:
                    miss["its messages are on several customers"] += 1
                elif orjson.loads(body)["id"] not in right:
                    miss["wrong customer"] += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                miss[type(exc).__name__] += 1

    async with aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=30),
            connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
    return lat, miss


def signal_worker(pids: list[int], sig: signal.Signals) -> None:
    """SIGSTOP / SIGCONT the stack's pipeline worker (a child of our `omnihub up`): after an
    INCOMPLETE resolution the snapshot, the limit and the lookups must not race with it."""
    for pid in pids:
        if _stack.role(pid) == "worker":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def read_token(path: str) -> str:
    return Path(path).read_text().strip()


def worker_log(data_dir: Path) -> Counter[str]:
    """Structured event names (``ingest.retry``, ``resolve.identity_race`` …) in the worker's
    log, Faust's slow-stream errors, other warnings and tracebacks."""
    found: Counter[str] = Counter()
    path = data_dir / "logs" / "worker.log"
    with contextlib.suppress(OSError), path.open(errors="replace") as f:
        for line in f:
            if m := re.search(r"\b((?:ingest|resolve|merge|worker)\.[a-z_]+)\b", line):
                found[m.group(1)] += 1
            elif "Stream stopped processing, or is slow" in line:
                found["faust: stream slow"] += 1  # Faust's own warning, per partition
            elif m := re.search(r"\] \[(ERROR|WARNING|CRITICAL)\] ", line):
                found[f"other {m.group(1)}"] += 1
            found["Traceback"] += line.startswith("Traceback")
    return +found


# ============================================================================ report
def fmt(v: float | None, unit: str = "", digits: int = 0) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}{unit}"


def report(a: argparse.Namespace, w: Workload, res: Result) -> dict[str, Any]:
    v = res.values
    v.update(people=a.people, messages=len(w.ids), dead_expected=w.dead, seed=a.seed,
             ratio=v["throughput"] / v["limit"], garbage=w.garbage, claims=w.claims,
             false_claims=w.false_claims)
    cpu = ", ".join(f"{k} {p:.0f}" for k, p in res.cpu.items() if p >= 0.5)
    out = [
        "", f"omnihub identity benchmark — {a.people:,} people, {len(w.ids):,} messages (seed "
            f"{a.seed}), {a.partitions} partitions, {os.cpu_count()} cores",
        f"  population  {v['distinct_names']} display names; channels " + ", ".join(
            f"{k} {n:,}" for k, n in w.channels.most_common()) + f"; {w.garbage:,} garbage "
            f"values; {w.claims:,} claimed identifiers, {w.false_claims:,} of another person",
        f"  truth       {v['true_clusters']:,} true clusters (customers a perfect resolver "
        f"makes) of the {v['people_seen']:,} people with stored messages; {v['true_pairs']:,} "
        "same-customer message pairs",
        f"  resolution  {fmt(v['throughput'], ' msg/s')}  ({v['stored']:,} stored + "
        f"{v['dead_lettered']:,} dead letters in {v['elapsed_s']:.1f} s; all produced and "
        f"acked after {v['produce_acked_s']:.1f} s)",
    ]
    if "worker_batches" in v:
        out.append(f"              worker: {v['worker_batches']:,} batches of "
                   f"{v['worker_batch_mean']:.0f} msgs, {v['worker_batch_s'] * 1000:.0f} ms "
                   f"each ({v['worker_batch_s'] * 1e6 / v['worker_batch_mean']:.0f} µs/msg), "
                   f"in flight {v['worker_busy']:.0%} of the phase")
    if "worker_steps" in v:
        rest = 1 - sum(v["worker_steps"].values())
        out.append(f"              its writes ({v['worker_write_s']:.1f} s): " + ", ".join(
            f"{k} {share:.0%}" for k, share in v["worker_steps"].items()) +
            f", decoding and events {rest:.0%}")
    out += [
        f"              rate in the first quarter of the phase {fmt(v['rate_q1'], ' msg/s')}, "
        f"in the last quarter {fmt(v['rate_q4'], ' msg/s')}",
        f"              CPU (% of one core): {cpu}",
        "              worker log: " + (", ".join(f"{k} ×{n:,}" for k, n in
                                              res.values["worker_log"].items()) or "quiet"),
        f"  limit       {fmt(v['limit'], ' docs/s')} = bulk_write of UpdateOne(upsert) × "
        f"{BATCH}, unordered (insert_many: {fmt(v['limit_insert'], ' docs/s')})",
        f"              $in by _id: {fmt(v['limit_in500'], ' ids/s')} at {BATCH} a query, "
        f"{fmt(v['limit_in50'], ' ids/s')} at 50; one $in lookup (the faster size) + one "
        f"upsert per message: {fmt(v['limit_resolve'], ' msg/s')}",
        f"  ratio       {v['ratio']:.3f}  (resolution throughput / bulk-upsert limit; target "
        f"≥ 0.5); {v['throughput'] / v['limit_resolve']:.3f} of lookup+upsert",
    ]
    if res.floor is not None:
        v.update(floor=res.floor.rate, floor_ratio=res.floor.rate / v["limit"])
        out += res.floor.lines(v["limit"])
    out += [
        f"  quality     precision {v['precision']:.6f}, recall {v['recall']:.6f} (target "
        f"≥ 0.995) of \"same customer\" over message pairs",
        f"              false merges {v['false_merges']} customers ({v['false_merge_pairs']} "
        f"pairs of people joined; target 0); {v['split_clusters']:,} true clusters split",
        f"              {v['customers']:,} customers hold messages ({v['customer_docs']:,} "
        f"customer documents, {v['tombstones']:,} tombstones); merges done {v['merges']:,} "
        f"(states {v['merge_states']})",
        f"              open merge suggestions {v['suggestions']:,}: "
        f"{v['suggestions_false_claims']:,} between different people (claimed-but-false, "
        f"rightly not merged), {v['suggestions_same_person']:,} within one person, "
        f"{v['suggestions_unknown']:,} unknown",
        f"              dead letters {v['dead_lettered']:,} (the whole workload has {w.dead:,}: "
        f"messages whose only channel-assured identifier is garbage; {v['dead_stages']})",
    ]
    out.append(f"  batch reads one batch's reads ({v['batch_reads_n']} messages) on the final "
               "store: " + ", ".join(f"{k} {ms:,.0f} ms" for k, ms in
                                     v["batch_reads_ms"].items()))
    for label, key in (("sequential", "lookup"), (f"{a.concurrency} at once", "lookup_c")):
        out.append(f"  lookup      {label}: p50 {fmt(v[f'{key}_p50_ms'], ' ms', 1)}, p99 "
                   f"{fmt(v[f'{key}_p99_ms'], ' ms', 1)} (target ≤ 50 ms), "
                   f"{fmt(v[f'{key}_rate'], '/s')}; misses {v[f'{key}_misses']} "
                   + str(dict(v.pop(f"{key}_miss_by"))))
    out += [f"  NOTE        {note}" for note in res.notes]
    print("\n".join(out))
    keys = ["people", "messages", "dead_lettered", "dead_expected", "throughput", "limit",
            "limit_insert", "limit_in500", "limit_in50", "limit_resolve", "ratio", "precision",
            "recall", "false_merges", "false_merge_pairs", "split_clusters", "true_clusters",
            "customers", "merges", "suggestions",
            "suggestions_false_claims", "suggestions_same_person", "lookup_p50_ms",
            "lookup_p99_ms", "lookup_misses", "lookup_c_p50_ms", "lookup_c_p99_ms",
            "lookup_c_misses", "elapsed_s", "missing", "unexpected_stored", "seed", "floor",
            "floor_ratio"]
    doc = {k: (round(v[k], 6 if k in ("precision", "recall") else 3)
               if isinstance(v.get(k), float) else v.get(k)) for k in keys}
    doc["cpu"] = {k: round(p, 1) for k, p in res.cpu.items() if p >= 0.5}
    doc["batch_reads_ms"] = {k: round(ms, 1) for k, ms in v["batch_reads_ms"].items()}
    doc["worker_steps"] = {k: round(share, 3) for k, share in v.get("worker_steps", {}).items()}
    doc.update(rate_q1=round(v["rate_q1"], 2), rate_q4=round(v["rate_q4"], 2))
    print(orjson.dumps(doc).decode(), flush=True)
    return doc


# ============================================================================ main
async def run(a: argparse.Namespace) -> int:
    res, run_id = Result(), uuid.uuid4().hex[:8]
    rng = random.Random(a.seed)
    t = time.monotonic()
    people = make_people(rng, a.people)
    w = make_workload(rng, people, a.messages, run_id)
    res.values["distinct_names"] = len({p.name for p in people})
    log(f"generated {a.people:,} people and {len(w.ids):,} messages "
        f"({sum(map(len, w.values)) / len(w.ids):.0f} bytes/event) in {time.monotonic() - t:.1f}s")
    if w.check_fail:
        res.notes.append(f"normaliser disagrees with the generator on {len(w.check_fail)} "
                         "written forms, e.g. " + "; ".join(w.check_fail[:3]))

    tmp = Path(tempfile.mkdtemp(prefix="omnihub-identity-"))
    lo, hi = (int(x) for x in a.ports.split("-"))
    names = ["api", "worker", "kafka", "s3", "mongo", "smtp"]
    stack = _stack.EmbeddedStack(a.omnihub, tmp / "data",
                                 dict(zip(names, _stack.free_ports(6, lo, hi), strict=True)),
                                 a.partitions)
    ok, paused = False, list[int]()
    try:
        log(f"starting omnihub up in {tmp} …")
        info = await stack.start()
        a.api, a.kafka, a.worker = info["api"], info["kafka"], info["worker"]
        a.token = read_token(info["token_file"])
        log(f"ready in {stack.ready_s:.1f}s")
        mongo: AsyncMongoClient[Any] = AsyncMongoClient(info["mongo"], tz_aware=True)
        try:
            log(f"resolution: producing {len(w.ids):,} messages to {topics.INBOUND}")
            await resolution_phase(a, w, mongo, [*stack.pids(), os.getpid()], res)
            if res.values["incomplete"]:
                log("pausing the worker (SIGSTOP) for the rest of the run")
                paused = stack.pids()
                signal_worker(paused, signal.SIGSTOP)
            await check_counts(a, w, mongo, res)
            res.values["worker_log"] = worker_log(stack.data_dir)
            log(f"resolution {res.values['throughput']:,.0f} msg/s; reading the customers")
            await asyncio.sleep(1.0)  # the last batch settles after its interactions are in
            customer_of, ident_cust = await quality(w, mongo, res)
            log(f"timing one batch's reads ({BATCH} stored messages) on the loaded store")
            await batch_reads(w, customer_of, mongo, rng, res)
            log("limit: raw bulk upserts and insert_many on the same database")
            await store_limit(w, mongo, a.limit_docs, res)
            log("floor: writing the final documents once each, nothing else")
            v = res.values
            res.floor = await _floor.measure(mongo[DB], v["stored"] + v["dead_lettered"],
                                             run_id, log)
            for key, conc in (("lookup", 1), ("lookup_c", a.concurrency)):
                log(f"lookups: {a.lookups:,} GET /api/v1/customers?identifier=…, {conc} at once")
                sample = lookup_sample(rng, ident_cust, a.lookups)
                t0 = time.monotonic()
                lat, miss = await lookup_phase(a, sample, conc)
                res.values.update({f"{key}_p50_ms": pct(lat, 50), f"{key}_p99_ms": pct(lat, 99),
                                   f"{key}_misses": sum(miss.values()), f"{key}_miss_by": miss,
                                   f"{key}_rate": len(lat) / (time.monotonic() - t0)})
        finally:
            await mongo.close()
        report(a, w, res)
        v = res.values
        ok = not res.notes and v["false_merges"] == 0 and v["missing"] == 0 and not (
            v["lookup_misses"] or v["lookup_c_misses"])
        return 0 if ok else 1
    finally:
        signal_worker(paused, signal.SIGCONT)
        log("stopping omnihub up …")
        log(f"stopped in {await stack.stop():.1f}s")
        if ok and not a.keep_data:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"data and logs kept in {tmp}/data (logs/worker.log is the pipeline's)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/identity.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 when every message was stored or dead-lettered as expected, no "
               "customer mixes two people and every lookup found the right customer; else 1 "
               "(see the NOTE lines). Throughput and latency targets do not change it.")
    g = p.add_argument_group("population")
    g.add_argument("--people", type=int, default=20_000, metavar="N",
                   help="people in the population (default 20000)")
    g.add_argument("--messages", type=int, default=100_000, metavar="M",
                   help="messages they write, over six weeks (default 100000)")
    g.add_argument("--seed", type=int, default=1, help="seed of the generator (default 1)")
    g.add_argument("--quick", action="store_true",
                   help="a fast check: 2000 people, 10000 messages, 500 lookups, deadline 900")
    g = p.add_argument_group("store limit")
    g.add_argument("--limit-docs", type=int, default=10_000, metavar="D",
                   help="documents written and looked up by each limit measurement (default "
                        "10000; the rates hardly depend on it, the time taken does)")
    g = p.add_argument_group("lookups")
    g.add_argument("--lookups", type=int, default=2000, metavar="L",
                   help="lookups by identifier in each of the two rounds (default 2000)")
    g.add_argument("--concurrency", type=int, default=16, metavar="C",
                   help="lookups in flight in the second round (default 16)")
    g = p.add_argument_group("embedded stack (always its own `omnihub up`, in a temp folder)")
    g.add_argument("--ports", default="17000-17999",
                   help="range to pick the stack's 6 free ports from (default 17000-17999)")
    g.add_argument("--partitions", type=int, default=EMBEDDED_PARTITIONS,
                   help="partitions of the stack's topics (default 1, as omnihub up)")
    g.add_argument("--keep-data", action="store_true",
                   help="keep the temporary data folder and logs (kept anyway on failure)")
    g.add_argument("--omnihub", default=str(Path(sys.executable).with_name("omnihub")),
                   help="the omnihub executable (default: beside this Python)")
    p.add_argument("--deadline", type=float, metavar="S",
                   help="stop waiting for the resolution after S seconds and measure what was "
                        "processed (reported as INCOMPLETE; default 3600, 900 with --quick)")
    p.add_argument("--stall", type=float, default=120.0,
                   help="give the resolution up after this many seconds without progress "
                        "(default 120)")
    a = p.parse_args(argv)
    if a.quick:
        a.people, a.messages, a.lookups = 2000, 10_000, 500
    a.deadline = a.deadline or (900.0 if a.quick else 3600.0)
    if a.people < 2 or a.messages < 1 or a.lookups < 1 or a.concurrency < 1:
        p.error("--people ≥ 2, --messages, --lookups and --concurrency ≥ 1")
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
