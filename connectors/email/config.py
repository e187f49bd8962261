"""Inboxes of the email channel: address, team, outbound relay, IMAP account.

Given as JSON (``OMNIHUB_EMAIL_INBOXES``) or a TOML/JSON file (``OMNIHUB_EMAIL_INBOXES_FILE``)::

    [[inbox]]
    address = "support@example.com"
    team = "Support"
    smtp = { host = "smtp.example.com", username = "support@example.com", password_env = "PW" }
    [inbox.imap]
    host = "imap.example.com"
    username = "support@example.com"
    password_file = "/run/secrets/support-imap"
    mailboxes = ["INBOX", "Support"]

Credentials come only from environment variables (``password_env``) or files
(``password_file``, e.g. a Kubernetes/systemd secret); a password written into the
configuration itself is refused, and no repr or log line ever shows one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.config_source import load_source
from connectors.errors import ConnectorError


class ConfigError(ConnectorError):
    """The email configuration is wrong; the message says what to change."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Login(_Model):
    username: str | None = None
    password_env: str | None = Field(None, description="environment variable holding it")
    password_file: Path | None = Field(None, description="file holding it (a mounted secret)")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError(
                "a password must not be written into the configuration: use password_env "
                "(an environment variable) or password_file (a secret file)"
            )
        return data

    def password(self) -> str | None:
        """Read the secret now (it may rotate); None when no login is configured."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"environment variable {self.password_env} is not set")
            return value
        if self.password_file:
            try:
                return self.password_file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"cannot read {self.password_file}: {exc.strerror}") from None
        return None


class SmtpRelay(_Login):
    """Where agent replies are sent from this inbox (your provider's submission server)."""

    host: str
    port: int = 587
    starttls: bool = Field(True, description="STARTTLS after connecting (port 587)")
    ssl: bool = Field(False, description="TLS from the start (port 465)")
    timeout: float = 30.0


class ImapAccount(_Login):
    """A mailbox server omnihub reads; several folders of one account can be watched."""

    host: str
    port: int = 993
    ssl: bool = True
    starttls: bool = False
    mailboxes: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    initial: Literal["new", "all"] = Field(
        "new",
        description="first connection: 'new' = from now on (backfill the past with "
        "`omnihub email backfill`), 'all' = everything in the mailbox",
    )
    timeout: float = 30.0


class Inbox(_Model):
    address: str = Field(min_length=3, max_length=256)
    team: str | None = None
    smtp: SmtpRelay | None = None
    imap: ImapAccount | None = None

    @field_validator("address")
    @classmethod
    def _lower(cls, value: str) -> str:
        value = value.strip().lower()
        if "@" not in value:
            raise ValueError("must be an email address")
        return value

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


def parse_inboxes(data: Any) -> list[Inbox]:
    """Inboxes from decoded JSON/TOML: a list, or a table with an ``inbox`` list."""
    if isinstance(data, dict):
        data = data.get("inbox", data.get("inboxes"))
    if not isinstance(data, list):
        raise ConfigError("inboxes must be a list (TOML: [[inbox]] tables)")
    try:
        inboxes = [Inbox.model_validate(item) for item in data]
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(f"inbox {loc}: {first.get('msg', 'invalid')}") from None
    seen: set[str] = set()
    for inbox in inboxes:
        if inbox.address in seen:
            raise ConfigError(f"inbox {inbox.address} is configured twice")
        seen.add(inbox.address)
    return inboxes


def load_inboxes(*, inline: str | None, path: Path | None, default_address: str) -> list[Inbox]:
    """The configured inboxes, or one default inbox (no relay, no IMAP) when none are."""
    data = load_source(inline=inline, path=path, env="OMNIHUB_EMAIL_INBOXES", error=ConfigError)
    return [Inbox(address=default_address)] if data is None else parse_inboxes(data)
