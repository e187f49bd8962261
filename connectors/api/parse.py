"""Pure: a JSON body of ``POST /api/v1/messages`` → :class:`Message` of channel ``api``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from connectors.errors import InvalidPayload
from pipeline.contract import Message
from unify.identifiers import InvalidIdentifier, normalize

DEFAULTS = {"channel": "api", "direction": "in"}


def parse_message(
    body: Any, *, now: datetime, default_account: str = "api", default_region: str = "IR"
) -> Message:
    """Validate a pushed message; fills channel ``api``, ``occurred_at`` = now, ``account``
    and ``thread`` defaults. Raises :class:`InvalidPayload` naming the first bad field,
    including a sender identifier that cannot be normalised (the caller can fix it now;
    later it could only be dead-lettered)."""
    if not isinstance(body, dict):
        raise InvalidPayload("body must be a JSON object", None)
    channel = body.get("channel", "api")
    if channel != "api":
        raise InvalidPayload("only channel 'api' can be pushed here", "channel")
    data = {**DEFAULTS, **body}
    data.setdefault("account", default_account)
    data.setdefault("occurred_at", now)
    if "thread" not in data and isinstance(data.get("account"), str):
        data["thread"] = data["account"]
    try:
        message = Message.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidPayload(f"{loc}: {first.get('msg', 'invalid')}", loc or None) from None
    for i, ident in enumerate(message.sender):
        try:
            normalize(ident.kind, ident.value, default_region=default_region)
        except InvalidIdentifier as exc:
            raise InvalidPayload(f"sender.{i}.value: {exc}", f"sender.{i}.value") from None
    return message
