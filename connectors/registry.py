"""Connector name → class. New channels register here."""

from __future__ import annotations

from connectors.api import ApiConnector
from connectors.base import Connector
from connectors.email import EmailConnector
from connectors.webchat import WebchatConnector

CONNECTORS: dict[str, type[Connector]] = {
    ApiConnector.channel: ApiConnector,
    EmailConnector.channel: EmailConnector,
    WebchatConnector.channel: WebchatConnector,
}


def get(name: str) -> type[Connector]:
    try:
        return CONNECTORS[name]
    except KeyError:
        known = ", ".join(sorted(CONNECTORS))
        raise KeyError(f"unknown connector {name!r}; known: {known}") from None
