"""The worker's Kafka consumer waits at most ``Settings.worker_wait`` per fetch (not Faust's
1.5 s)."""

from __future__ import annotations

import contextlib

from hub.settings import Settings
from pipeline.app import create_app


async def test_the_worker_consumer_uses_the_configured_fetch_wait(tmp_path, monkeypatch) -> None:
    for k in ("OMNIHUB_WORKER_FETCH_WAIT", "OMNIHUB_KAFKA_FETCH_WAIT"):
        monkeypatch.delenv(k, raising=False)
    cases = (
        ({"worker_fetch_wait": 0.25}, 250),
        ({"kafka_fetch_wait": 0.02}, 20),  # the stack's wait when shorter than the default
        ({}, 50),  # the default; and no app stacks its wait on the one before
    )
    for given, ms in cases:
        app = create_app(Settings(data_dir=tmp_path, **given))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            assert consumer._fetch_max_wait_ms == ms
        finally:
            with contextlib.suppress(Exception):
                await consumer._client.close()
