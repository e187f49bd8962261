"""Web chat benchmark: many idle widgets on one connector, and visitor → agent latency.

Against its own `omnihub up` (free ports, a fresh temporary folder, stopped at the end):

  1. idle: open --idle-visitors (2,000) widget sockets to the one web chat connector process
     (each says hello, gets welcome and history, then only answers the server's pings) and
     hold them for --hold seconds; report the connector's RSS before and with them (target
     ≤ 400 MB) and the CPU it spends holding them;
  2. latency: with the idle sockets still open, --active (200) more visitors send --rate (50)
     messages a second between them for --duration seconds, open loop (each message scheduled
     by the wall clock, none waits for another). --agents agents (3, capacity 100 each) are
     online on /api/v1/agents/stream and accept every offer. Each message is timed from the
     widget-protocol send (the frame written to the visitor's socket) to the agent socket's
     push that carries its interaction (the router's `message` push, which follows
     interaction.recorded; for a conversation's first message the `offer` comes first and is
     timed separately). Target: p99 ≤ 1 s. Also: send → ack (Kafka acknowledged).

It prints a summary, then, last, one JSON line. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _stack  # before the rest: it moves bench/ to the end of sys.path
import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.embedded import EMBEDDED_PARTITIONS, find_tansu
from pipeline import contract as c
from pipeline import topics

RSS_TARGET_MB = 400.0
P99_TARGET_MS = 1000.0
TEXTS = [
    "سلام، سفارشم کی می‌رسه؟",
    "کد پیگیری ۱۲۳۴۵ رو دارم",
    "ممنون از پاسخ شما",
    "Hi, is my order shipped?",
    "می‌خوام آدرس رو عوض کنم",
    "Can I change the size?",
]


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


@dataclass
class Visitor:
    ws: aiohttp.ClientWebSocketResponse
    visitor_id: str
    task: asyncio.Task[None] | None = None


@dataclass
class Tally:
    sent: dict[str, float] = field(default_factory=dict)  # event id → send time
    acked: dict[str, float] = field(default_factory=dict)  # event id → ack latency, s
    delivered: dict[str, float] = field(default_factory=dict)  # event id → push latency, s
    first: set[str] = field(default_factory=set)  # event ids opening a conversation
    conv_of: dict[str, str] = field(default_factory=dict)  # event id → conversation id
    errors: dict[str, int] = field(default_factory=dict)
    send_lag: float = 0.0
    offer_t: dict[str, float] = field(default_factory=dict)  # conversation id → offer time
    wall: dict[str, float] = field(default_factory=dict)  # event id → send, wall clock
    produced: dict[str, float] = field(default_factory=dict)  # → inbound record timestamp
    recorded: dict[str, float] = field(default_factory=dict)  # → interaction.recorded's
    pushed_wall: dict[str, float] = field(default_factory=dict)  # → agent push, wall clock
    expected: int = 0
    all_delivered: asyncio.Event = field(default_factory=asyncio.Event)
    accepted: int = 0

    def new_phase(self, expected: int) -> None:
        """Forget the messages of an earlier phase (offers and acceptances stay)."""
        for d in (
            self.sent,
            self.acked,
            self.delivered,
            self.conv_of,
            self.wall,
            self.produced,
            self.recorded,
            self.pushed_wall,
        ):
            d.clear()
        self.first.clear()
        self.errors.clear()
        self.send_lag = 0.0
        self.expected = expected
        self.all_delivered = asyncio.Event()


# ============================================================================ the widgets
async def open_visitor(session: aiohttp.ClientSession, url: str, origin: str) -> Visitor:
    ws = await session.ws_connect(url, headers={"Origin": origin}, max_msg_size=0)
    await ws.send_str('{"type":"hello"}')
    welcome = orjson.loads((await ws.receive(timeout=30)).data)
    await ws.receive(timeout=30)  # history
    return Visitor(ws, welcome["visitor_id"])


async def idle_reader(v: Visitor) -> None:
    """Only answers pings (aiohttp does so while something receives)."""
    async for _ in v.ws:
        pass


async def active_reader(v: Visitor, tally: Tally, inbox: str) -> None:
    async for msg in v.ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        f = orjson.loads(msg.data)
        if f["type"] == "ack":
            sent = tally.sent.get(f["id"])
            if sent is not None:
                tally.acked[f["id"]] = time.perf_counter() - sent
        elif f["type"] == "error":
            tally.errors[f["code"]] = tally.errors.get(f["code"], 0) + 1


async def open_many(
    session: aiohttp.ClientSession, url: str, origin: str, n: int, parallel: int = 50
) -> tuple[list[Visitor], int]:
    out: list[Visitor] = []
    failed = 0
    gate = asyncio.Semaphore(parallel)

    async def one() -> None:
        nonlocal failed
        async with gate:
            try:
                out.append(await open_visitor(session, url, origin))
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
                failed += 1
                if failed <= 3:
                    log(f"a visitor could not connect: {exc!r}")

    await asyncio.gather(*(one() for _ in range(n)))
    return out, failed


# ============================================================================ the agents
async def make_agents(api: str, token: str, n: int) -> list[dict[str, Any]]:
    admin = {"Authorization": f"Bearer {token}"}
    agents = []
    async with aiohttp.ClientSession(base_url=api) as http:
        for i in range(n):
            body = {
                "name": f"Agent {i}",
                "email": f"bench-{uuid.uuid4().hex[:8]}@example.com",
                "password": "bench-password-1",
                "capacity": {"webchat": 100},
            }
            async with http.post("/api/v1/agents", json=body, headers=admin) as r:
                assert r.status == 201, await r.text()
            async with http.post("/api/v1/agents/login", json=body) as r:
                assert r.status == 200, await r.text()
                agents.append({"token": (await r.json())["token"]})
    return agents


async def agent_reader(
    http: aiohttp.ClientSession,
    ws: aiohttp.ClientWebSocketResponse,
    headers: dict[str, str],
    tally: Tally,
) -> None:
    accepting: set[asyncio.Task[Any]] = set()

    async def accept(offer_id: str) -> None:
        async with http.post(f"/api/v1/agents/offers/{offer_id}/accept", headers=headers) as r:
            await r.read()
            if r.status == 200:
                tally.accepted += 1

    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        now = time.perf_counter()
        p = orjson.loads(msg.data)
        if p["type"] == "message" and p.get("direction") == "in":
            sent = tally.sent.get(p["interaction_id"])
            if sent is not None and p["interaction_id"] not in tally.delivered:
                tally.delivered[p["interaction_id"]] = now - sent
                tally.conv_of[p["interaction_id"]] = p["conversation_id"]
                tally.pushed_wall[p["interaction_id"]] = time.time()
                if tally.expected and len(tally.delivered) >= tally.expected:
                    tally.all_delivered.set()
        elif p["type"] == "offer":
            tally.offer_t[p["offer"]["conversation_id"]] = now
            t = asyncio.create_task(accept(p["offer"]["id"]))
            accepting.add(t)
            t.add_done_callback(accepting.discard)


async def watch_topics(bootstrap: str, tally: Tally) -> None:
    """Broker timestamps (the producers' clocks: the same machine) of each message's inbound
    record and of its interaction.recorded event, to split the latency into stages."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()
        parts = [
            TopicPartition(t, p)
            for t in (topics.INBOUND, topics.CUSTOMER_EVENTS)
            for p in consumer.partitions_for_topic(t) or ()
        ]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        while True:
            for tp, recs in (await consumer.getmany(timeout_ms=1000)).items():
                for r in recs:
                    if tp.topic == topics.INBOUND:
                        eid = orjson.loads(r.value)["id"]
                        if eid in tally.wall:
                            tally.produced[eid] = r.timestamp / 1000
                    elif b'"omnihub.interaction.recorded.v1"' in r.value:
                        eid = orjson.loads(r.value)["data"]["interaction_id"]
                        if eid in tally.wall:
                            tally.recorded[eid] = r.timestamp / 1000
    finally:
        await consumer.stop()


def offer_latencies(tally: Tally) -> tuple[float | None, float | None]:
    """p50, p99 (ms) of a conversation's first message → the offer on an agent socket."""
    ms = [
        (tally.offer_t[tally.conv_of[e]] - tally.sent[e]) * 1000
        for e in tally.first
        if e in tally.conv_of and tally.conv_of[e] in tally.offer_t
    ]
    return pct(ms, 0.5), pct(ms, 0.99)


def stages(tally: Tally) -> dict[str, float | None]:
    """p50/p99 of each stage, ms, over the messages seen at every stage."""
    ids = [e for e in tally.delivered if e in tally.produced and e in tally.recorded]
    parts = {
        "connector": [tally.produced[e] - tally.wall[e] for e in ids],
        "worker": [tally.recorded[e] - tally.produced[e] for e in ids],
        "router": [tally.pushed_wall[e] - tally.recorded[e] for e in ids],
    }
    out: dict[str, float | None] = {}
    for name, values in parts.items():
        ms = [x * 1000 for x in values]
        out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = pct(ms, 0.5), pct(ms, 0.99)
    return out


# ============================================================================ phases
def webchat_pid(stack: _stack.EmbeddedStack) -> int:
    for pid in stack.pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"connector" in argv and b"webchat" in argv:
            return pid
    raise RuntimeError("the web chat connector process was not found")


def meter(stack: _stack.EmbeddedStack, pid: int) -> _stack.CpuMeter:
    m = _stack.CpuMeter([*stack.pids(), os.getpid()])
    m.names[pid] = "webchat"
    return m


async def run(a: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="omnihub-bench-webchat-"))
    lo, hi = (int(x) for x in a.ports.split("-"))
    names = ["api", "worker", "kafka", "s3", "mongo", "smtp", "webchat"]
    ports = dict(zip(names, _stack.free_ports(len(names), lo, hi), strict=True))
    # one address (this machine) opens every socket: lift the per-address limits, keep the
    # per-visitor ones as they are by default
    os.environ["OMNIHUB_WEBCHAT_MAX_CONNECTIONS_PER_IP"] = str(a.idle_visitors + a.active + 100)
    os.environ["OMNIHUB_WEBCHAT_INBOXES"] = orjson.dumps(
        [
            {
                "id": "default",
                "allowed_origins": ["http://127.0.0.1:*"],
                "ip_rate": 1e7,
                "ip_burst": 100000,
            }
        ]
    ).decode()
    broker: asyncio.subprocess.Process | None = None
    if a.broker == "memory":
        # tansu keeping records in memory, started here and given to `omnihub up` as an
        # external Kafka: what the rest of the stack does when the broker's storage is not
        # the bottleneck (the embedded default stores every record batch as an S3 object)
        port = _stack.free_ports(1, lo, hi)[0]
        tansu = find_tansu()
        broker = await asyncio.create_subprocess_exec(
            str(tansu),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{port}",
            "--storage-engine",
            "memory://tansu/",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        os.environ["OMNIHUB_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
        os.environ["OMNIHUB_KAFKA_IDEMPOTENCE"] = "false"
    stack = _stack.EmbeddedStack(a.omnihub, tmp / "data", ports, a.partitions)
    v: dict[str, Any] = {}
    notes: list[str] = []
    ok = False
    conn = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(connector=conn)
    idle: list[Visitor] = []
    active: list[Visitor] = []
    agent_socks: list[aiohttp.ClientWebSocketResponse] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        log(f"starting omnihub up in {tmp} …")
        info = await stack.start()
        base = info["webchat"]
        url, origin = f"{base.replace('http', 'ws', 1)}/ws?inbox=default", base
        pid = webchat_pid(stack)
        await asyncio.sleep(a.settle)
        v["ready_s"] = stack.ready_s
        v["rss_base_mb"] = _stack.rss_kb(pid) / 1024

        # ---------------------------------------------------------------- 1. idle sockets
        log(f"opening {a.idle_visitors:,} idle widget sockets …")
        t0 = time.monotonic()
        idle, failed = await open_many(session, url, origin, a.idle_visitors)
        v["open_s"] = time.monotonic() - t0
        v["idle_open"], v["idle_failed"] = len(idle), failed
        tasks += [asyncio.create_task(idle_reader(x)) for x in idle]
        log(f"{len(idle):,} open in {v['open_s']:.1f}s ({failed} failed); holding {a.hold:g}s")
        cpu = meter(stack, pid)
        cpu.start()
        await asyncio.sleep(a.hold)
        v["cpu_idle"] = cpu.stop()
        v["rss_idle_mb"] = _stack.rss_kb(pid) / 1024
        still = sum(1 for x in idle if not x.ws.closed)
        v["idle_still_open"] = still
        if still < a.idle_visitors:
            notes.append(f"only {still:,} of {a.idle_visitors:,} idle sockets were open at the end")

        # ---------------------------------------------------------------- 2. latency
        token = await asyncio.to_thread(lambda: Path(info["token_file"]).read_text().strip())
        agents = await make_agents(info["api"], token, a.agents)
        tally = Tally()
        api = aiohttp.ClientSession(base_url=info["api"])
        for ag in agents:
            headers = {"Authorization": f"Bearer {ag['token']}"}
            ws = await api.ws_connect("/api/v1/agents/stream", headers=headers)
            await ws.receive(timeout=10)  # hello
            agent_socks.append(ws)
            tasks.append(asyncio.create_task(agent_reader(api, ws, headers, tally)))
        active, failed = await open_many(session, url, origin, a.active)
        if failed:
            notes.append(f"{failed} active visitors could not connect")
        tasks += [asyncio.create_task(active_reader(x, tally, "default")) for x in active]
        if a.stages:
            tasks.append(asyncio.create_task(watch_topics(info["kafka"], tally)))
            await asyncio.sleep(1.0)  # the watcher is positioned
        rng = random.Random(a.seed)

        async def send(who: Visitor, first: bool = False) -> None:
            cid = uuid.uuid4().hex
            eid = c.message_event_id("webchat", "default", f"{who.visitor_id}/{cid}")
            frame = orjson.dumps({"type": "message", "client_id": cid, "text": rng.choice(TEXTS)})
            tally.sent[eid] = time.perf_counter()
            tally.wall[eid] = time.time()
            if first:
                tally.first.add(eid)
            await who.ws.send_str(frame.decode())

        async def paced(who_of: list[Visitor], rate: float, firsts: int) -> float:
            """Send one message per entry at ``rate`` (open loop); the first ``firsts`` open
            their conversations. Returns the rate achieved."""
            start = time.perf_counter()
            for k, who in enumerate(who_of):
                lag = time.perf_counter() - (start + k / rate)
                if lag < 0:
                    await asyncio.sleep(-lag)
                else:
                    tally.send_lag = max(tally.send_lag, lag)
                await send(who, k < firsts)
            return len(who_of) / (time.perf_counter() - start)

        if a.warmup:
            # the conversations exist before the clock runs: one message from each visitor,
            # every offer accepted (the timed phase is about messages in ongoing chats)
            log(f"warm-up: a first message from each of {len(active)} visitors, at {a.rate:g}/s")
            tally.expected = len(active)
            t0 = time.monotonic()
            await paced(active, a.rate, len(active))
            deadline = time.monotonic() + a.warmup_timeout

            def warm() -> bool:
                return tally.accepted >= len(active) and len(tally.delivered) >= len(active)

            while not warm() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            v["warmup_s"] = time.monotonic() - t0
            v["warmup_offer_p50_ms"], v["warmup_offer_p99_ms"] = offer_latencies(tally)
            v["warmup_accepted"] = tally.accepted
            if tally.accepted < len(active):
                notes.append(
                    f"warm-up: only {tally.accepted} of {len(active)} offers accepted "
                    f"after {a.warmup_timeout:g} s"
                )
            log(f"warm-up done in {v['warmup_s']:.1f}s ({tally.accepted} conversations accepted)")
        total = int(a.rate * a.duration)
        tally.new_phase(total)
        log(
            f"{len(active)} active visitors, {a.agents} agents online; sending {total:,} "
            f"messages at {a.rate:g}/s"
        )
        cpu = meter(stack, pid)
        cpu.start()
        order = [active[k % len(active)] for k in range(total)]
        v["offered_rate"] = await paced(order, a.rate, 0 if a.warmup else len(active))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.all_delivered.wait(), a.drain)
        v["cpu_active"] = cpu.stop()
        v["rss_active_mb"] = _stack.rss_kb(pid) / 1024

        lat = [s * 1000 for e, s in tally.delivered.items()]
        steady = [s * 1000 for e, s in tally.delivered.items() if e not in tally.first]
        acks = [s * 1000 for s in tally.acked.values()]
        offers = offer_latencies(tally)
        v.update(
            sent=total,
            delivered=len(tally.delivered),
            acked=len(tally.acked),
            on_kafka=len(tally.produced),
            recorded=len(tally.recorded),
            lost=total - len(tally.delivered),
            errors=tally.errors,
            p50_ms=pct(lat, 0.5),
            p99_ms=pct(lat, 0.99),
            max_ms=max(lat, default=None),
            steady_p99_ms=pct(steady, 0.99),
            ack_p50_ms=pct(acks, 0.5),
            ack_p99_ms=pct(acks, 0.99),
            max_send_lag_ms=tally.send_lag * 1000,
            conversations=len(tally.offer_t),
            offer_p50_ms=offers[0],
            offer_p99_ms=offers[1],
            **stages(tally),
        )
        for ws in agent_socks:
            await ws.close()
        await api.close()
        report(a, v, notes)
        ok = v["lost"] == 0 and not notes
        return 0 if ok else 1
    finally:
        for t in tasks:
            t.cancel()
        await session.close()
        log("stopping omnihub up …")
        log(f"stopped in {await stack.stop():.1f}s")
        if broker is not None and broker.returncode is None:
            broker.terminate()
            try:
                await asyncio.wait_for(broker.wait(), 5)
            except TimeoutError:
                broker.kill()
                await broker.wait()
        if ok and not a.keep_data:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"data and logs kept in {tmp}/data (logs/ has each process's log)")


def fmt(x: float | None, unit: str = "", digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}{unit}"


def report(a: argparse.Namespace, v: dict[str, Any], notes: list[str]) -> None:
    per_socket_kb = (v["rss_idle_mb"] - v["rss_base_mb"]) * 1024 / max(1, v["idle_open"])
    v["rss_ratio"] = v["rss_active_mb"] / RSS_TARGET_MB
    v["p99_ratio"] = (v["p99_ms"] or float("inf")) / P99_TARGET_MS
    v["per_socket_kb"] = per_socket_kb

    def cpu(d: dict[str, float]) -> str:
        return ", ".join(f"{k} {p:.0f}" for k, p in d.items() if p >= 0.5)

    out = [
        "",
        f"omnihub web chat benchmark — {a.idle_visitors:,} idle + {a.active} active "
        f"visitors, {a.rate:g} msg/s for {a.duration:g} s, {a.agents} agents, "
        f"{os.cpu_count()} cores, broker {a.broker}",
        f"  stack       ready in {v['ready_s']:.1f} s",
        f"  idle        {v['idle_open']:,} sockets opened in {v['open_s']:.1f} s "
        f"({v['idle_failed']} failed), {v['idle_still_open']:,} still open after {a.hold:g} s",
        f"  RSS         web chat connector {v['rss_base_mb']:.0f} MB alone, "
        f"{v['rss_idle_mb']:.0f} MB with the idle sockets ({per_socket_kb:.1f} KB each), "
        f"{v['rss_active_mb']:.0f} MB after the latency phase; target ≤ {RSS_TARGET_MB:.0f} MB "
        f"→ ratio {v['rss_ratio']:.2f}",
        f"              CPU holding them (% of one core): {cpu(v['cpu_idle'])}",
        (
            f"  warm-up     one message from each active visitor: all offered and accepted "
            f"after {v['warmup_s']:.1f} s (first message → offer p50 "
            f"{fmt(v['warmup_offer_p50_ms'], ' ms')}, p99 {fmt(v['warmup_offer_p99_ms'], ' ms')});"
            " not in the figures below"
            if a.warmup
            else "  warm-up     none: conversations open during the timed phase"
        ),
        f"  latency     visitor send → agent push: p50 {fmt(v['p50_ms'], ' ms')}, p99 "
        f"{fmt(v['p99_ms'], ' ms')}, max {fmt(v['max_ms'], ' ms')} "
        f"(without conversations' first messages: p99 {fmt(v['steady_p99_ms'], ' ms')}); "
        f"target p99 ≤ {P99_TARGET_MS:.0f} ms → ratio {v['p99_ratio']:.2f}",
        f"              a conversation's first message → offer: p50 "
        f"{fmt(v['offer_p50_ms'], ' ms')}, p99 {fmt(v['offer_p99_ms'], ' ms')}",
        f"              by stage (--stages), p50/p99: send → on Kafka "
        f"{fmt(v['connector_p50_ms'], ' ms')}/"
        f"{fmt(v['connector_p99_ms'], ' ms')}; Kafka → interaction.recorded (worker) "
        f"{fmt(v['worker_p50_ms'], ' ms')}/{fmt(v['worker_p99_ms'], ' ms')}; recorded → "
        f"agent push (router) {fmt(v['router_p50_ms'], ' ms')}/{fmt(v['router_p99_ms'], ' ms')}",
        f"              visitor send → ack (Kafka acknowledged): p50 {fmt(v['ack_p50_ms'], ' ms')},"
        f" p99 {fmt(v['ack_p99_ms'], ' ms')}",
        f"              offered {v['offered_rate']:.1f} msg/s (max send lag "
        f"{v['max_send_lag_ms']:.0f} ms); {v['delivered']:,} of {v['sent']:,} pushed to an agent "
        f"within {a.drain:g} s of the end"
        + (
            f" ({v['on_kafka']:,} seen on the inbound topic, {v['recorded']:,} recorded by "
            "the worker)"
            if a.stages
            else ""
        )
        + f", {v['acked']:,} acked; "
        f"{v['conversations']} offers; "
        f"error frames: {v['errors'] or 'none'}",
        f"              CPU during it (% of one core): {cpu(v['cpu_active'])}",
    ]
    out += [f"  NOTE        {n}" for n in notes]
    print("\n".join(out))
    keys = [
        "rss_base_mb",
        "rss_idle_mb",
        "rss_active_mb",
        "rss_ratio",
        "per_socket_kb",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "steady_p99_ms",
        "p99_ratio",
        "offer_p50_ms",
        "offer_p99_ms",
        "connector_p50_ms",
        "connector_p99_ms",
        "worker_p50_ms",
        "worker_p99_ms",
        "router_p50_ms",
        "router_p99_ms",
        "ack_p50_ms",
        "ack_p99_ms",
        "sent",
        "delivered",
        "lost",
        "acked",
        "on_kafka",
        "recorded",
        "offered_rate",
        "idle_open",
        "idle_failed",
        "idle_still_open",
        "open_s",
        "ready_s",
        "errors",
    ]
    doc = {k: (round(v[k], 3) if isinstance(v.get(k), float) else v.get(k)) for k in keys}
    doc.update(
        warmup_s=v.get("warmup_s"),
        warmup_offer_p99_ms=v.get("warmup_offer_p99_ms"),
        broker=a.broker,
        idle_visitors=a.idle_visitors,
        active=a.active,
        rate=a.rate,
        duration=a.duration,
        agents=a.agents,
        cpu_idle={k: round(p, 1) for k, p in v["cpu_idle"].items()},
        cpu_active={k: round(p, 1) for k, p in v["cpu_active"].items()},
    )
    print(orjson.dumps(doc).decode(), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/webchat.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 when every message reached an agent, 1 otherwise.",
    )
    p.add_argument("--idle-visitors", type=int, default=2000, help="idle sockets (2000)")
    p.add_argument(
        "--hold",
        type=float,
        default=30.0,
        help="seconds to hold them before measuring (30: past a heartbeat)",
    )
    p.add_argument("--active", type=int, default=200, help="visitors sending messages (200)")
    p.add_argument("--rate", type=float, default=50.0, help="messages per second (50)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of sending (30)")
    p.add_argument(
        "--drain",
        type=float,
        default=10.0,
        help="seconds after the last send a message may still arrive (10)",
    )
    p.add_argument("--agents", type=int, default=3, help="agents online, capacity 100 (3)")
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="time the conversations' first messages too (default: a warm-up opens "
        "them, untimed, before the clock runs)",
    )
    p.add_argument(
        "--warmup-timeout",
        type=float,
        default=180.0,
        help="longest wait for the warm-up's offers to be accepted (180)",
    )
    p.add_argument(
        "--stages",
        action="store_true",
        help="also read the inbound and customer-event topics to split the latency into "
        "connector / worker / router (one more consumer: on the embedded broker's S3 storage "
        "its fetches add to the load being measured)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--settle", type=float, default=3.0, help="idle seconds after ready (3)")
    p.add_argument("--ports", default="19000-19999", help="range for the stack's 7 ports")
    p.add_argument("--partitions", type=int, default=EMBEDDED_PARTITIONS,
                   help="partitions of the stack's topics (default 1, as omnihub up)")
    p.add_argument(
        "--broker",
        choices=("embedded", "memory"),
        default="embedded",
        help="embedded: omnihub up's own tansu on S3 storage (default); memory: a "
        "tansu keeping records in memory, given to omnihub up as external Kafka",
    )
    p.add_argument("--keep-data", action="store_true")
    p.add_argument("--omnihub", default=str(Path(sys.executable).with_name("omnihub")))
    a = p.parse_args(argv)
    if a.active * 1 > a.agents * 100:
        p.error("--active conversations need --agents × 100 capacity")
    return a


def main() -> int:
    a = parse_args()
    loop = asyncio.new_event_loop()
    main_task = loop.create_task(run(a))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        return loop.run_until_complete(main_task)
    except asyncio.CancelledError:
        log("interrupted")
        return 130
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
