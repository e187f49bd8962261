"""The ``api`` channel: other systems push messages over the public HTTP API."""

from connectors.api.service import ApiConnector

__all__ = ["ApiConnector"]
