"""The worker's Kafka consumer follows the pace of ``kafka_fetch_wait`` and
``kafka_fetch_wait_busy`` (not Faust's fixed 1.5 s)."""

from __future__ import annotations

import contextlib

from hub.settings import Settings
from pipeline.app import create_app


async def test_the_worker_consumer_uses_the_configured_fetch_waits(tmp_path) -> None:
    for idle, busy in ((0.25, 0.05), (0.1, 0.02)):  # the second app must not stack on the first
        settings = Settings(data_dir=tmp_path, kafka_fetch_wait=idle, kafka_fetch_wait_busy=busy)
        app = create_app(settings)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            assert consumer._fetch_max_wait_ms == int(idle * 1000)
        finally:
            with contextlib.suppress(Exception):
                await consumer._client.close()
