"""Named errors of the connector layer, mapped to HTTP codes or the dead-letter topic."""


class ConnectorError(Exception):
    """Base of every connector error."""


class InvalidPayload(ConnectorError):
    """The peer sent something that is not a valid message; ``field`` names what."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UpstreamUnavailable(ConnectorError):
    """Kafka (or another dependency) did not acknowledge: tell the peer to retry later."""
