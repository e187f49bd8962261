"""The worker's Kafka consumer waits at most ``kafka_fetch_wait`` per fetch (not Faust's 1.5 s)."""

from __future__ import annotations

import contextlib

from hub.settings import Settings
from pipeline.app import create_app


async def test_the_worker_consumer_uses_the_configured_fetch_wait(tmp_path) -> None:
    for wait, ms in ((0.25, 250), (0.1, 100)):  # the second app must not stack on the first
        app = create_app(Settings(data_dir=tmp_path, kafka_fetch_wait=wait))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            assert consumer._fetch_max_wait_ms == ms
        finally:
            with contextlib.suppress(Exception):
                await consumer._client.close()
