"""The ``email`` channel: inbound SMTP (final hop of a real MTA), IMAP mailboxes, replies."""

from connectors.email.service import EmailConnector

__all__ = ["EmailConnector"]
