"""Shared by the email integration tests: a broker per test, topic readers, child processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from hub.bootstrap import create_topics
from hub.embedded import find_tansu
from hub.settings import Settings
from hub.supervisor import tail
from pipeline.publish import KafkaPublisher
from store.mongo import Store, connect, ensure_indexes
from tests.peers import Peer, free_port, port_open, start_peer, wait_for

INBOX = "support@shop.example.com"


def tansu_on(workdir: Path, port: int) -> Peer:
    """tansu on a given port (to restart a broker where clients expect it)."""
    return start_peer(
        "tansu",
        [
            str(find_tansu()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        port,
        workdir / f"tansu-{port}.log",
    )


@dataclass
class Env:
    settings: Settings
    store: Store
    publisher: KafkaPublisher
    broker: Peer
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap


async def make_env(
    workdir: Path, mongo_url: str, inboxes: list[dict[str, Any]] | None = None, **over: Any
) -> Env:
    broker = tansu_on(workdir, free_port())
    db = f"e_{uuid.uuid4().hex[:10]}"
    inboxes = inboxes if inboxes is not None else [{"address": INBOX}]
    values: dict[str, Any] = {
        "kafka_bootstrap": f"127.0.0.1:{broker.port}",
        "kafka_idempotence": False,
        "mongo_uri": mongo_url,
        "mongo_db": db,
        "data_dir": workdir / "data",
        "email_smtp_port": free_port(),
        "email_inboxes": json.dumps(inboxes),
        "email_outbound_group": f"email-out-{db}",
        **over,
    }
    settings = Settings(**values)
    await create_topics(settings)
    store = connect(mongo_url, db)
    await ensure_indexes(store)
    publisher = KafkaPublisher(settings.bootstrap, idempotence=False, client_id="test-email")
    await publisher.start()
    env = {
        f"OMNIHUB_{k.upper()}": str(v)
        for k, v in values.items()
        if v is not None and not isinstance(v, bool)
    } | {"OMNIHUB_KAFKA_IDEMPOTENCE": "false", "OMNIHUB_LOG_LEVEL": "info"}
    return Env(settings, store, publisher, broker, workdir, env)


async def close_env(env: Env) -> None:
    await env.publisher.stop()
    await env.store.client.drop_database(env.settings.mongo_db)
    await env.store.close()
    env.broker.stop()


class TopicReader:
    """Reads a topic from the beginning in the background; ``records`` grows as data comes."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=f"reader-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for recs in batch.values():
                for r in recs:
                    self.records.append(json.loads(r.value))
                    self.arrived.append(now)

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        if self._consumer:
            await self._consumer.stop()

    async def wait(
        self, cond: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond(self.records):
                return self.records
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; have {len(self.records)} records"
        )


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """wait_for for async tests: never blocks the loop (servers under test run on it)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def data_of(records: list[dict[str, Any]], type_: str | None = None) -> list[dict[str, Any]]:
    return [r["data"] for r in records if type_ is None or r["type"] == type_]


class Proc:
    """An `omnihub` child process (worker, connector, backfill) with its own log."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool] | None = None, timeout: float = 40.0) -> Proc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub", *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        if ready is not None:
            deadline = time.monotonic() + timeout
            while not ready():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.argv} not ready:\n{tail(self.log, 40)}")
                time.sleep(0.1)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()


def http_ok(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    return probe


def worker(env: Env, log: Path) -> Proc:
    port = free_port()
    penv = env.env | {
        "OMNIHUB_WORKER_PORT": str(port),
        "OMNIHUB_APP_ID": f"omnihub-test-{env.settings.mongo_db}",
        "OMNIHUB_LOG_LEVEL": "warning",
    }
    return Proc(["worker"], penv, log).start(http_ok(f"http://127.0.0.1:{port}/healthz"))


def connector(env: Env, log: Path, **extra: str) -> Proc:
    port = env.settings.email_smtp_port
    return Proc(["connector", "email"], env.env | extra, log).start(lambda: port_open(port))


async def wait_count(
    store: Store, n: int, timeout: float, query: dict[str, Any] | None = None
) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = await store.interactions.count_documents(query or {})
        if count >= n:
            return count
        await asyncio.sleep(0.2)
    return count


async def settle(store: Store, seconds: float = 1.0) -> int:
    """Wait until the interaction count stops changing for ``seconds`` (late duplicates)."""
    last = -1
    while True:
        count = await store.interactions.count_documents({})
        if count == last:
            return count
        last = count
        await asyncio.sleep(seconds)


__all__ = [
    "INBOX",
    "AsyncIterator",
    "Env",
    "Proc",
    "TopicReader",
    "close_env",
    "connector",
    "data_of",
    "make_env",
    "settle",
    "tansu_on",
    "until",
    "wait_count",
    "wait_for",
    "worker",
]
