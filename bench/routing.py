"""Routing benchmark: how fast does a new conversation reach an agent, and how close does the
router come to the store's limit?

Phases, one run:

  1. policy: decisions per second of router/policy.py alone (pure: rank one conversation among
     the agents; plan a queue in batches);
  2. broker floor, on the idle stack: one record produced (acks=all) until a consumer holds
     it, 40 times for each consumer fetch wait of 500, 100 (the stack's) and 10 ms; a
     message reaches the router over two such hops;
  3. offer latency, end to end on its own `omnihub up` (unless --api/--token-file/--mongo point
     at a running one): 50 agents log in and stay online over the WebSocket; messages are
     POSTed to /api/v1/messages at a fixed rate (open loop, 100/s for 20 s by default) as
     conversations of M messages one second apart (M = 5: 20 new conversations/s, each from a
     new customer); offer latency = offer frame received on an agent's socket − the first
     message's 202; follow-ups are timed to their `message` push on the assigned agent's
     socket. Agents accept at once and resolve after the conversation ends, so capacity frees
     and the queue keeps moving. The CPU each process of the stack used while the messages
     were posted is printed beside, with the router's passes (from the API's /metrics) and
     the worker's batches (from its /metrics: messages each, the store's part and the time
     its events took to the broker);
  4. service: a Router in this process, on a scratch database of the same MongoDB server,
     drains N waiting conversations to agents with room: decisions per second, end to end
     (classification, reservation, offer, claim);
  5. limit: the writes one decision needs (classify update, capacity update on the agent,
     offer insert, claim update), issued raw against the same server at the same
     concurrency; service ÷ limit is the ratio.

Prints a summary, then, last, one JSON line. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _stack
import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient

from hub.bootstrap import create_topic
from pipeline import contract as c
from pipeline import topics
from router import policy
from router.service import PARALLEL, Router
from store.mongo import Store, ensure_indexes

CHANNELS = ("email", "sms", "telegram", "webchat", "call", "api")
PASSWORD = "bench-password-1"
HOP_WAITS_MS = (500, 100, 10)


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


async def scraped(url: str | None, pattern: str) -> list[re.Match[str]]:
    """The lines of a service's Prometheus /metrics that match ``pattern`` (none if it has no
    URL or does not answer)."""
    if url is None:
        return []
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return []
    return [m for line in text.splitlines() if (m := re.match(pattern, line))]


async def router_passes(api: str) -> dict[str, float]:
    """The API's routing passes so far: count and summed seconds of the wait for the pass
    under way and of the pass's own work."""
    found = await scraped(api, r'omnihub_router_pass_seconds_(sum|count)\{part="(\w+)"\} (\S+)')
    return {f"{m[2]}_{m[1]}": float(m[3]) for m in found}


async def worker_batches(url: str | None) -> dict[str, float]:
    """The worker's ingest batches so far: count and summed records, and summed seconds of
    the store's part (write) and of the events' (publish)."""
    found = await scraped(url, r'omnihub_ingest_(batch_size|stage_seconds)_(sum|count)'
                               r'(?:\{stage="(\w+)"\})? (\S+)')
    return {f"{m[3] or 'size'}_{m[2]}": float(m[4]) for m in found}


def pct(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# ---------------------------------------------------------------------------- 1. policy
def policy_phase(agents_n: int, seconds: float = 2.0) -> dict[str, float]:
    rng = random.Random(7)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    skills = ["lang:fa", "lang:en", "segment:vip", "product:loans"]
    agents = [
        policy.AgentView(
            f"a{i}",
            skills=frozenset(rng.sample(skills, rng.randint(1, 4))),
            capacity={"webchat": 3, "email": 10, "api": 5},
            load={"webchat": rng.randint(0, 2), "email": rng.randint(0, 9)},
            last_offered_at=now - timedelta(seconds=rng.randint(0, 600)),
        )
        for i in range(agents_n)
    ]
    convs = [
        policy.ConversationView(
            f"c{i}",
            channel=rng.choice(("webchat", "email", "api")),
            waiting_since=now - timedelta(seconds=rng.randint(0, 600)),
            priority=rng.choice((0, 0, 1, 2)),
            required_skills=frozenset(rng.sample(skills[:2], 1)),
            sticky_agent=f"a{rng.randrange(agents_n)}" if rng.random() < 0.3 else None,
            sticky_at=now,
        )
        for i in range(1000)
    ]
    out: dict[str, float] = {}
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for conv in convs:
            policy.rank(conv, agents, now)
        done += len(convs)
    out["policy_rank_per_s"] = done / (time.perf_counter() - t0)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in range(0, len(convs), 100):
            policy.plan(convs[i : i + 100], agents, now)
        done += len(convs)
    out["policy_plan_per_s"] = done / (time.perf_counter() - t0)
    text = "سلام، فوری: پول من برگشت نخورده و می‌خواهم شکایت کنم"
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        for _ in range(1000):
            policy.classify(text, keywords=("فوری", "شکایت", "urgent", "refund"))
        done += 1000
    out["classify_per_s"] = done / (time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------- 2. latency
class Agent:
    def __init__(self, n: int, run: str) -> None:
        self.n, self.email = n, f"bench-{run}-{n}@example.com"
        self.token = ""
        self.offers = 0


async def api_call(
    s: aiohttp.ClientSession, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    async with s.request(
        method, path, json=body, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        return r.status, await r.json(content_type=None)


def schedule(a: argparse.Namespace) -> list[tuple[float, int, int]]:
    """(send at, conversation, message number): a new conversation every M/rate seconds, each
    with M messages one ``--gap`` apart, so about ``rate`` messages/s arrive overall."""
    per = a.per_conversation
    starts = int(a.rate * a.duration / per)
    plan = [(cid * per / a.rate + j * a.gap, cid, j) for cid in range(starts) for j in range(per)]
    return sorted(plan)


async def watch_recorded(
    bootstrap: str, marker: re.Pattern[str], seen: dict[tuple[int, int], float],
    stop: asyncio.Event,
) -> None:
    """When each message's interaction.recorded reaches the customer-event stream: splits the
    latency into the pipeline's part and the router's."""
    consumer = AIOKafkaConsumer(
        topics.CUSTOMER_EVENTS, bootstrap_servers=bootstrap, group_id=None,
        auto_offset_reset="latest", fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            at = time.monotonic()
            for records in batches.values():
                for rec in records:
                    if b"interaction.recorded" not in (rec.value or b""):
                        continue
                    m = marker.search(rec.value.decode(errors="replace"))
                    if m:
                        seen.setdefault((int(m.group(1)), int(m.group(2))), at)
    finally:
        await consumer.stop()


async def hop(kafka: str, wait_ms: int, samples: int = 40) -> list[float]:
    """Milliseconds from each send to the consumer holding the record (see hop_phase)."""
    topic = f"bench.hop.{uuid.uuid4().hex[:8]}"
    await create_topic(kafka, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=None, fetch_max_wait_ms=wait_ms)
    await producer.start()
    await consumer.start()
    hops: list[float] = []
    try:
        part = TopicPartition(topic, 0)
        consumer.assign([part])
        await consumer.seek_to_end(part)
        for i in range(samples):
            t0 = time.monotonic()
            await producer.send(topic, str(i).encode())
            got = False
            while not got and time.monotonic() - t0 < 10:
                batch = await consumer.getmany(part, timeout_ms=1000)
                got = any(r.value == str(i).encode() for r in batch.get(part, ()))
            if got:
                hops.append((time.monotonic() - t0) * 1000)
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
        await producer.stop()
    return hops


async def hop_phase(kafka: str) -> dict[str, Any]:
    """The broker's own floor: one record produced (acks=all, as the API does) to a fresh
    one-partition topic until a consumer polling it holds it, 40 times, 100 ms apart, on the
    idle stack, for consumer fetch waits of 500 ms (aiokafka's default), 100 ms (the
    stack's ``kafka_fetch_wait``) and 10 ms: tansu answers a waiting fetch late, so the hop
    follows the wait. A message reaches the router over two such hops (inbound → worker,
    customer-events → router)."""
    out: dict[str, Any] = {}
    for wait in HOP_WAITS_MS:
        hops = await hop(kafka, wait)
        out[f"hop{wait}_p50_ms"], out[f"hop{wait}_p99_ms"] = pct(hops, 50), pct(hops, 99)
    return out


async def latency_phase(
    a: argparse.Namespace, api: str, system: str, kafka: str | None, pids: list[int],
    worker: str | None = None,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    recorded: dict[tuple[int, int], float] = {}
    agents = [Agent(n, run) for n in range(a.agents)]
    posted: dict[tuple[int, int], float] = {}
    offered: dict[int, float] = {}
    pushed: dict[tuple[int, int], float] = {}
    failures: dict[str, int] = {}
    stop = asyncio.Event()
    marker = re.compile(rf"#{run}-(\d+)-(\d+)#")
    connector = aiohttp.TCPConnector(limit=0)

    def fail(what: str) -> None:
        failures[what] = failures.get(what, 0) + 1

    async with aiohttp.ClientSession(base_url=api, connector=connector) as s:
        log(f"creating and logging in {a.agents} agents")
        for ag in agents:
            body = {"name": f"Bench {ag.n}", "email": ag.email, "password": PASSWORD,
                    "capacity": {"api": a.capacity}, "skills": ["lang:fa", "lang:en"]}
            status, doc = await api_call(s, "POST", "/api/v1/agents", system, body)
            if status != 201:
                raise RuntimeError(f"creating an agent failed: {status} {doc}")
        for ag in agents:
            status, doc = await api_call(
                s, "POST", "/api/v1/agents/login", "",
                {"email": ag.email, "password": PASSWORD},
            )
            if status != 200:
                raise RuntimeError(f"login failed: {status} {doc}")
            ag.token = doc["token"]

        async def work(ag: Agent, offer: dict[str, Any]) -> None:
            status, _ = await api_call(
                s, "POST", f"/api/v1/agents/offers/{offer['id']}/accept", ag.token
            )
            if status != 200:
                fail(f"accept {status}")
                return
            await asyncio.sleep(a.hold)
            status, _ = await api_call(
                s, "POST", f"/api/v1/conversations/{offer['conversation_id']}/resolve", ag.token
            )
            if status != 200:
                fail(f"resolve {status}")

        tasks: set[asyncio.Task[None]] = set()

        async def agent_socket(ag: Agent, ready: asyncio.Event) -> None:
            async with s.ws_connect(f"/api/v1/agents/stream?token={ag.token}") as ws:
                ready.set()
                while not stop.is_set():
                    try:
                        msg = await ws.receive(timeout=0.5)
                    except TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    at = time.monotonic()
                    data = orjson.loads(msg.data)
                    if data.get("type") == "message":
                        m = marker.search(data.get("text") or "")
                        if m:
                            pushed.setdefault((int(m.group(1)), int(m.group(2))), at)
                        continue
                    if data.get("type") != "offer":
                        continue
                    m = marker.search(data["offer"].get("preview") or "")
                    if m:
                        offered.setdefault(int(m.group(1)), at)
                    ag.offers += 1
                    t = asyncio.create_task(work(ag, data["offer"]))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)

        watcher = (
            asyncio.create_task(watch_recorded(kafka, marker, recorded, stop)) if kafka else None
        )
        readies = [asyncio.Event() for _ in agents]
        sockets = [asyncio.create_task(agent_socket(ag, r))
                   for ag, r in zip(agents, readies, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
        await asyncio.sleep(1.0)
        plan = schedule(a)
        log(f"{a.agents} agents online; {len(plan)} messages ({plan[-1][1] + 1} conversations "
            f"of {a.per_conversation}) at ~{a.rate:g} msg/s")

        async def post(cid: int, j: int) -> None:
            words = "سلام، سفارشم کی می‌رسه؟" if j == 0 else "هنوز منتظرم"
            body = {
                "source_id": f"route-{run}-{cid}-{j}",
                "sender": [{"kind": "api", "value": f"route-{run}-{cid}"}],
                "text": f"{words} #{run}-{cid}-{j}#",
            }
            async with s.post("/api/v1/messages", json=body,
                              headers={"Authorization": f"Bearer {system}"}) as r:
                if r.status == 202:
                    posted[(cid, j)] = time.monotonic()
                else:
                    fail(f"post {r.status}")

        meter = _stack.CpuMeter([*pids, os.getpid()])
        meter.start()
        passes0, batches0 = await router_passes(api), await worker_batches(worker)
        t0 = time.monotonic()
        posts = []
        for at, cid, j in plan:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            posts.append(asyncio.create_task(post(cid, j)))
        await asyncio.gather(*posts)
        sent_s = time.monotonic() - t0
        cpu = meter.stop()  # while the messages come in (what the latencies above met)
        passes1, batches1 = await router_passes(api), await worker_batches(worker)
        moved = {k: passes1.get(k, 0.0) - passes0.get(k, 0.0) for k in passes1}
        wrote = {k: batches1.get(k, 0.0) - batches0.get(k, 0.0) for k in batches1}
        n_batches = wrote.get("size_count", 0.0)
        n_passes = moved.get("decide_count", 0.0)
        firsts = {cid for cid, j in posted if j == 0}
        deadline = time.monotonic() + a.drain
        while len(offered.keys() & firsts) < len(firsts) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # the last follow-ups' pushes
        stop.set()
        await asyncio.gather(*sockets, return_exceptions=True)
        await asyncio.gather(*list(tasks), return_exceptions=True)
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)
    lat = [(offered[c] - posted[(c, 0)]) * 1000 for c in firsts if c in offered]
    pipeline = [(recorded[(c, 0)] - posted[(c, 0)]) * 1000 for c in firsts if (c, 0) in recorded]
    routing = [(offered[c] - recorded[(c, 0)]) * 1000
               for c in firsts if c in offered and (c, 0) in recorded]
    follow = [(pushed[k] - posted[k]) * 1000 for k in posted if k[1] > 0 and k in pushed]
    # every conversation's M messages overlap only once the first ones are M-1 gaps old: the
    # rate between that ramp-up and the last new conversation is the one asked for
    ramp = (a.per_conversation - 1) * a.gap
    steady = [at for at, cid, j in plan if ramp <= at < a.duration and (cid, j) in posted]
    return {
        "posted": len(posted),
        "conversations": len(firsts),
        "offered": len(lat),
        "missing": len(firsts) - len(lat),
        "rate_achieved": len(posted) / sent_s,
        "rate_steady": len(steady) / (a.duration - ramp) if a.duration > ramp else None,
        "offer_p50_ms": pct(lat, 50),
        "offer_p90_ms": pct(lat, 90),
        "offer_p99_ms": pct(lat, 99),
        "offer_max_ms": max(lat) if lat else None,
        "pipeline_p50_ms": pct(pipeline, 50),
        "pipeline_p99_ms": pct(pipeline, 99),
        "router_p50_ms": pct(routing, 50),
        "router_p99_ms": pct(routing, 99),
        "message_push_p50_ms": pct(follow, 50),
        "message_push_p99_ms": pct(follow, 99),
        "message_pushed": len(follow),
        "failures": failures,
        "cpu_posting": {k: round(v, 1) for k, v in cpu.items()},
        "router_passes": n_passes,
        "router_pass_wait_ms": moved.get("wait_sum", 0.0) / n_passes * 1000 if n_passes else None,
        "router_pass_ms": moved.get("decide_sum", 0.0) / n_passes * 1000 if n_passes else None,
        "router_deciding": moved.get("decide_sum", 0.0) / sent_s if n_passes else None,
        "worker_batches": n_batches,
        "worker_batch_size": wrote.get("size_sum", 0.0) / n_batches if n_batches else None,
        "worker_write_ms": wrote.get("write_sum", 0.0) / n_batches * 1000 if n_batches else None,
        "worker_publish_ms": (wrote.get("publish_sum", 0.0) / n_batches * 1000
                              if n_batches else None),
    }


# ---------------------------------------------------------------------------- 3 + 4. service
class _NoPublish:
    async def publish(self, records: Any) -> None:
        return None


async def service_phase(mongo_url: str, n: int, agents_n: int) -> dict[str, float]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url, tz_aware=True)
    db_name = f"bench_routing_{uuid.uuid4().hex[:8]}"
    store = Store(client=client, db=client[db_name])
    try:
        await ensure_indexes(store)
        now = c.utcnow()
        cap = n // agents_n + 1
        await store.agents.insert_many([
            {"_id": f"a{i}", "name": f"a{i}", "role": "agent", "active": True,
             "status": "online", "seen_at": now, "skills": ["lang:fa", "lang:en"], "teams": [],
             "capacity": {ch: 0 for ch in CHANNELS} | {"api": cap},
             "holds": {ch: [] for ch in CHANNELS}, "last_offered_at": None}
            for i in range(agents_n)
        ])
        await store.conversations.insert_many([
            {"_id": f"k{i}", "customer_id": f"c{i}", "channel": "api", "thread": f"k{i}",
             "account": "api", "state": "open", "active": True, "assignee": None,
             "offer_id": None, "priority": 0, "opened_at": now - timedelta(seconds=n - i)}
            for i in range(n)
        ])
        await store.interactions.insert_many([
            {"_id": f"i{i}", "customer_id": f"c{i}", "conversation_id": f"k{i}",
             "direction": "in", "occurred_at": now, "text": "سلام، سفارشم کی می‌رسه؟"}
            for i in range(n)
        ])
        router = Router(store, _NoPublish())
        t0 = time.perf_counter()
        ids = [f"k{i}" for i in range(n)]
        for i in range(0, n, 100):  # as events arrive: in batches
            await router.route_many(ids[i : i + 100])
        await router.idle()
        took = time.perf_counter() - t0
        offered = await store.offers.count_documents({"state": "pending"})
        service = offered / took

        # the limit: the same writes, raw, at the same concurrency
        scratch = store.db["bench_limit"]
        await scratch.insert_many([{"_id": f"s{i}", "v": 0} for i in range(n)])
        small = store.db["bench_limit_agents"]
        await small.insert_many([{"_id": f"a{i}", "n": 0} for i in range(agents_n)])
        offers_col = store.db["bench_limit_offers"]
        gate = asyncio.Semaphore(PARALLEL)

        async def one(i: int) -> None:
            async with gate:
                await scratch.update_one({"_id": f"s{i}", "v": 0}, {"$set": {"c": 1}})
                await small.update_one({"_id": f"a{i % agents_n}"}, {"$inc": {"n": 1}})
                await offers_col.insert_one({"_id": f"o{i}", "k": f"s{i}", "state": "pending"})
                await scratch.update_one({"_id": f"s{i}", "v": 0}, {"$set": {"v": 1}})

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        limit = n / (time.perf_counter() - t0)
        return {"service_decisions_per_s": service, "store_limit_decisions_per_s": limit,
                "service_vs_limit": service / limit, "service_offered": offered,
                "writes_per_decision": 4}
    finally:
        await client.drop_database(db_name)
        await client.close()


# ---------------------------------------------------------------------------- running
def port_names(omnihub: str) -> list[str]:
    """Every `--X-port` option of `omnihub up` (the set grows with connectors)."""
    out = subprocess.run([omnihub, "up", "--help"], capture_output=True, text=True, timeout=60)
    return sorted(set(re.findall(r"--([a-z0-9]+)-port\b", out.stdout)))


def read_token(path: str) -> str:
    return Path(path).read_text().strip()


def fmt(v: float | None, digits: int = 0) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


async def run(a: argparse.Namespace) -> int:
    res: dict[str, Any] = {"bench": "routing", "at": datetime.now(UTC).isoformat(),
                           "cpus": os.cpu_count()}
    log("policy alone (pure) …")
    res.update(policy_phase(a.agents))
    stack: _stack.EmbeddedStack | None = None
    tmp: Path | None = None
    try:
        if a.api is None:
            tmp = Path(tempfile.mkdtemp(prefix="omnihub-bench-routing-"))
            names = port_names(a.omnihub)
            lo, hi = (int(x) for x in a.ports.split("-"))
            ports = dict(zip(names, _stack.free_ports(len(names), lo, hi), strict=True))
            stack = _stack.EmbeddedStack(a.omnihub, tmp / "data", ports)
            log(f"starting omnihub up in {tmp} ({', '.join(names)} ports) …")
            info = await stack.start()
            a.api, a.token_file, a.mongo = info["api"], info["token_file"], info["mongo"]
            a.kafka = info.get("kafka")
            res["ready_s"] = stack.ready_s
        system = read_token(a.token_file)
        res.update({f"hop{w}_{p}_ms": None for w in HOP_WAITS_MS for p in ("p50", "p99")})
        if a.kafka:
            log("broker: one produce → consume hop, 40 times per fetch wait, idle stack …")
            res.update(await hop_phase(a.kafka))
        res.update(await latency_phase(
            a, a.api, system, a.kafka, stack.pids() if stack is not None else [],
            f"http://127.0.0.1:{stack.ports['worker']}" if stack is not None else None))
        log(f"service: routing {a.conversations} waiting conversations in-process …")
        res.update(await service_phase(a.mongo, a.conversations, a.agents))
    finally:
        if stack is not None:
            log("stopping omnihub up …")
            await stack.stop()
        if tmp is not None and not a.keep_data:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nrouting benchmark ({res['cpus']} CPUs)\n"
        f"  policy alone        rank {fmt(res['policy_rank_per_s'])} decisions/s · "
        f"plan {fmt(res['policy_plan_per_s'])}/s · classify {fmt(res['classify_per_s'])}/s\n"
        f"  offer latency       {res['posted']} messages ({res['conversations']} new "
        f"conversations), {fmt(res['rate_steady'], 1)}/s while they all overlap "
        f"({fmt(res['rate_achieved'], 1)}/s with the ramps), {a.agents} agents online: "
        f"p50 {fmt(res['offer_p50_ms'])} ms · p90 {fmt(res['offer_p90_ms'])} ms · "
        f"p99 {fmt(res['offer_p99_ms'])} ms (targets 100 / 500); missing {res['missing']}; "
        f"failures {res['failures'] or 'none'}\n"
        f"  of which            message → interaction.recorded (pipeline) p50 "
        f"{fmt(res['pipeline_p50_ms'])} ms · p99 {fmt(res['pipeline_p99_ms'])} ms; recorded → "
        f"offer (router) p50 {fmt(res['router_p50_ms'])} ms · p99 {fmt(res['router_p99_ms'])} ms\n"
        f"  broker floor        one produce → consume hop on the idle broker, p50 / p99 by "
        "consumer fetch wait: " + " · ".join(
            f"{w} ms: {fmt(res[f'hop{w}_p50_ms'])} / {fmt(res[f'hop{w}_p99_ms'])} ms"
            for w in HOP_WAITS_MS) + "; an offer takes two hops\n"
        f"  message push        follow-ups on the agent's socket: p50 "
        f"{fmt(res['message_push_p50_ms'])} ms · p99 {fmt(res['message_push_p99_ms'])} ms "
        f"({res['message_pushed']} pushed)\n"
        f"  CPU while posting   (% of one core; {res['cpus']} cores) " + ", ".join(
            f"{k} {v:.0f}" for k, v in res["cpu_posting"].items()) + "\n"
        + (f"  router passes       {res['router_passes']:.0f} while posting, one at a time: "
           f"each waited {fmt(res['router_pass_wait_ms'])} ms for the one under way and took "
           f"{fmt(res['router_pass_ms'])} ms; deciding {res['router_deciding']:.0%} of the time\n"
           if res.get("router_passes") else "")
        + (f"  worker batches      {res['worker_batches']:.0f} while posting, "
           f"{fmt(res['worker_batch_size'], 1)} messages each: store part "
           f"{fmt(res['worker_write_ms'])} ms, then its events to the broker "
           f"{fmt(res['worker_publish_ms'])} ms (the next batch is written meanwhile)\n"
           if res.get("worker_batches") else "") +
        f"  service             {fmt(res['service_decisions_per_s'])} decisions/s end to end; "
        f"store limit for its {res['writes_per_decision']} writes "
        f"{fmt(res['store_limit_decisions_per_s'])}/s → ratio "
        f"{res['service_vs_limit']:.2f}\n"
    )
    print(orjson.dumps(res, default=str).decode())
    return 0 if res["missing"] == 0 and not res["failures"] else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=100.0, help="messages/s POSTed (default 100)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    p.add_argument("--agents", type=int, default=50, help="agents online (default 50)")
    p.add_argument("--capacity", type=int, default=5, help="api conversations per agent")
    p.add_argument("--per-conversation", type=int, default=5, metavar="M",
                   help="messages per conversation: rate/M new conversations/s (default 5)")
    p.add_argument("--gap", type=float, default=1.0,
                   help="seconds between a conversation's messages (default 1)")
    p.add_argument("--hold", type=float, default=6.0,
                   help="seconds an agent keeps a conversation before resolving (default 6)")
    p.add_argument("--drain", type=float, default=20.0,
                   help="seconds to wait for the last offers after the load")
    p.add_argument("--conversations", type=int, default=1000,
                   help="conversations of the in-process service phase (default 1000)")
    p.add_argument("--ports", default="19000-19999", help="range for the stack's free ports")
    p.add_argument("--keep-data", action="store_true")
    p.add_argument("--omnihub", default=str(Path(sys.executable).with_name("omnihub")))
    p.add_argument("--api", metavar="URL", help="a running stack's API (skip `omnihub up`)")
    p.add_argument("--token-file", metavar="F")
    p.add_argument("--mongo", metavar="URI")
    p.add_argument("--kafka", metavar="H:P", help="its Kafka (splits the latency; optional)")
    a = p.parse_args(argv)
    if a.api is not None and (a.token_file is None or a.mongo is None):
        p.error("--api, --token-file and --mongo go together")
    return a


def main() -> int:
    a = parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(a))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
