"""The ``webchat`` channel: a website widget over WebSocket, uploads, agent replies live."""

from connectors.webchat.service import WebchatConnector

__all__ = ["WebchatConnector"]
