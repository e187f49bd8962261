"""The Faust app of the pipeline worker: everything hangs off the object built here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.heap import freeze_startup
from hub.settings import Settings
from pipeline import topics
from pipeline.agents.ingest import BatchResult, Ingestor, RawRecord
from pipeline.batching import take
from pipeline.contract import utcnow
from pipeline.publish import FaustPublisher
from router.service import RouterConfig
from store import merges
from store.mongo import connect, ensure_indexes, wait_ready

log = logging.getLogger("omnihub.worker")


def _fetch_wait(ms: int) -> None:
    """Faust builds the worker's consumer with a fixed 1.5 s fetch wait. tansu answers a
    waiting fetch only when that wait ends, so each message waited up to 1.5 s before the
    worker saw it (measured: accept→push p99 1.24 s at 100 ms elsewhere; 0.54 s with 100 ms
    here). The consumer reads the wait when it starts, so setting it after creation holds."""
    cls = AIOKafkaConsumerThread
    create = cls.__dict__.get("_omnihub_create") or cls._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = ms  # no public knob in Faust
        return consumer

    cls._omnihub_create = create  # type: ignore[attr-defined]
    cls._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def create_app(settings: Settings) -> faust.App:
    _fetch_wait(int(settings.worker_wait * 1000))
    datadir = settings.data_dir / "worker"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{hp.strip()}" for hp in settings.bootstrap.split(",")],
        store="memory://",
        autodiscover=False,
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        producer_acks=-1,
        # no linger: a batch's events are handed to the producer together (FaustPublisher),
        # so waiting gathered nothing and cost every event its wait: with 5 ms, an offer's
        # p50 was 14-26 ms later (bench/HISTORY.md, 2026-11-24 21:20)
        producer_linger=0.0,
        # one record batch per broker write: on tansu's S3 storage every batch is an object
        # that every fetch lists, so small batches slow down every consumer
        producer_max_batch_size=1_048_576,
        web_enabled=True,
        web_host=settings.host,
        web_port=settings.worker_port,
        web_bind=settings.host,
        web_in_thread=False,
        datadir=str(datadir),
        stream_wait_empty=False,
    )
    inbound = app.topic(
        topics.INBOUND,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    state: dict[str, Any] = {"ingestor": None}

    @app.task
    async def connect_store() -> None:
        store = connect(settings.mongo_url, settings.mongo_db)
        await wait_ready(store, settings.ready_timeout)
        await ensure_indexes(store)
        resumed = await merges.resume_pending(store, utcnow())
        if resumed:
            log.info("worker.merges_resumed count=%d", resumed)
        state["ingestor"] = Ingestor(
            store,
            FaustPublisher(app),
            default_region=settings.default_region,
            retry_max=settings.store_retry_max,
            policy=settings.identity_policy(),
            reopen_window=settings.reopen_window,
            routing=RouterConfig.from_settings(settings),
        )
        freeze_startup()  # what start-up made lives on: full collections skip it
        log.info("worker.store_ready")

    @app.agent(inbound, name="ingest")
    async def ingest(stream: faust.StreamT[Any]) -> None:
        # take (pipeline/batching.py): batches follow the traffic, and offsets are
        # acknowledged by us, only after the batch is durable, so a crash or a stop in the
        # middle of a batch never commits it.
        # Two batches overlap: while one batch's events are on their way to the broker the
        # next one is written to the store. Events leave in batch order (a batch is published
        # only after the previous one was acknowledged) and each batch is acked only after
        # its own events were.
        sending: asyncio.Future[None] | None = None

        async def send(ingestor: Ingestor, result: BatchResult, events: Sequence[Any]) -> None:
            await ingestor.publish(result)
            for e in events:
                await stream.ack(e)

        async for events in take(
            stream, settings.batch_size, settings.batch_within, settings.batch_quiet
        ):
            ingestor = state["ingestor"]
            while ingestor is None:
                await app.sleep(0.1)
                ingestor = state["ingestor"]
            batch = [
                RawRecord(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                )
                for e in events
            ]
            written = await ingestor.write(batch)
            if sending is not None:
                await sending
            sending = asyncio.ensure_future(send(ingestor, written, list(events)))

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            assigned = app.consumer.assignment() if app.consumer else set()
            ready = state["ingestor"] is not None and not app.rebalancing
            body = {
                "status": "ok" if ready else "starting",
                "service": "worker",
                "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
            }
            return self.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # the exposition content type carries a charset: pass it as a header, not as
            # content_type (aiohttp refuses a charset there)
            return self.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app
