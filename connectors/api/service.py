"""I/O of the ``api`` channel: the ``POST /api/v1/messages`` route."""

from __future__ import annotations

from aiohttp import web

from connectors.api.parse import parse_message
from connectors.base import Connector
from connectors.errors import InvalidPayload, UpstreamUnavailable
from hub.web import ApiError, json_response, principal, read_json, require_system
from pipeline.contract import utcnow


class ApiConnector(Connector):
    channel = "api"
    default_region = "IR"

    async def start(self) -> None:
        """Lives inside the API service; nothing to start."""

    async def stop(self) -> None:
        """Nothing to stop."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/v1/messages", self.post_message)]

    async def post_message(self, request: web.Request) -> web.Response:
        require_system(principal(request))
        body = await read_json(request)
        try:
            message = parse_message(body, now=utcnow(), default_region=self.default_region)
        except InvalidPayload as exc:
            raise ApiError(400, "invalid_field", str(exc), exc.field) from None
        try:
            (event_id,) = await self.submit([message])
        except UpstreamUnavailable as exc:
            raise ApiError(503, "unavailable", f"{exc}; retry later") from None
        return json_response({"id": event_id, "status": "accepted"}, 202)
