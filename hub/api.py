"""The API service: public HTTP API, agent WebSocket, the router and the agent console, in one
aiohttp app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from connectors.api import ApiConnector
from connectors.api.send import ReplyRecorder
from hub import customers
from hub.heap import freeze_startup
from hub.identity import IdentityActions
from hub.settings import Settings
from hub.web import API_TOKEN, MAX_BODY, STORE, edge, healthz, metrics
from pipeline.publish import KafkaPublisher
from router import api as router_api
from router import console
from router.service import Router, RouterConfig
from store import agents as agents_repo
from store.mongo import connect, ensure_indexes, wait_ready

log = logging.getLogger("omnihub.api")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[edge], client_max_size=settings.max_body_bytes)
    app[API_TOKEN] = settings.resolve_api_token(create=False)
    app[MAX_BODY] = settings.max_body_bytes
    app[customers.REGION] = settings.default_region

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = connect(settings.mongo_url, settings.mongo_db)
        await wait_ready(store, settings.ready_timeout)
        await ensure_indexes(store)
        await agents_repo.migrate(store)
        publisher = KafkaPublisher(
            settings.bootstrap, idempotence=settings.idempotence, client_id="omnihub-api"
        )
        await publisher.start()
        router = Router(store, publisher, RouterConfig.from_settings(settings))
        await router.start(
            settings.bootstrap,
            settings.router_group,
            settings.kafka_session_timeout,
            settings.router_wait,
        )
        app[STORE] = store
        app[customers.ACTIONS] = IdentityActions(
            store, publisher, senders=dict(settings.verification_senders)
        )
        app[router_api.ROUTER] = router
        connector.publisher = publisher
        recorder = ReplyRecorder(publisher, settings)  # api-channel replies → the timeline
        await recorder.start()
        freeze_startup()  # what start-up made lives on: full collections skip it
        log.info("api.ready url=%s console=%s/console/", settings.api_url, settings.api_url)
        yield
        await recorder.stop()
        await router.stop()
        await publisher.stop()
        await store.close()

    connector = ApiConnector(publisher=None)  # type: ignore[arg-type]  # set at start-up
    connector.default_region = settings.default_region
    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.add_routes(connector.routes())
    app.add_routes(customers.routes())
    app.add_routes(router_api.routes())
    app.add_routes(console.routes())
    return app


def serve(settings: Settings) -> None:
    app = create_app(settings)
    web.run_app(
        app,
        host=settings.host,
        port=settings.api_port,
        print=None,
        access_log=None,
        shutdown_timeout=3.0,
        handle_signals=True,
    )


__all__ = ["create_app", "serve"]
