"""Idempotent start-up work shared by every service: topics and indexes."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from hub.settings import Settings
from pipeline.topics import all_topics
from store.mongo import connect, ensure_indexes, wait_ready

log = logging.getLogger("omnihub.bootstrap")


async def wait_for_kafka(settings: Settings, timeout: float) -> AIOKafkaAdminClient:
    # aiokafka logs an ERROR per refused connection; while we wait on purpose that is noise
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return await _connect_admin(settings, timeout)
    finally:
        logging.getLogger("aiokafka").setLevel(logging.NOTSET)


async def _connect_admin(settings: Settings, timeout: float) -> AIOKafkaAdminClient:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap, request_timeout_ms=5000, client_id="omnihub-init"
        )
        try:
            await admin.start()
            return admin
        except (KafkaConnectionError, KafkaError, OSError):
            await admin.close()
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)


async def create_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create omnihub's topics that do not exist yet; returns the names created."""
    admin = await wait_for_kafka(settings, timeout)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(t.name, t.partitions, settings.replication_factor)
            for t in all_topics(settings.partitions)
            if t.name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another service
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """One topic outside omnihub's own (a test's or a benchmark's), replication factor 1."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def init(settings: Settings, timeout: float = 30.0) -> list[str]:
    created = await create_topics(settings, timeout)
    store = connect(settings.mongo_url, settings.mongo_db)
    try:
        await wait_ready(store, timeout)
        await ensure_indexes(store)
    finally:
        await store.close()
    return created
