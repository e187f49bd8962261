"""Inboxes of the web chat channel: one per website (or app) that embeds the widget.

Given as JSON (``OMNIHUB_WEBCHAT_INBOXES``) or a TOML/JSON file (``OMNIHUB_WEBCHAT_INBOXES_FILE``)::

    [[inbox]]
    id = "shop"
    team = "پشتیبانی فروشگاه"                 # the title of the chat panel
    allowed_origins = ["https://shop.example.ir", "https://*.shop.example.ir"]
    secret_env = "SHOP_WEBCHAT_SECRET"        # or secret_file = "/run/secrets/shop-webchat"
    max_text_chars = 4000
    visitor_rate = 20                         # messages a minute, per visitor
    upload_max_bytes = 10485760

The secret signs the identity of signed-in users (README, "Web chat"); it comes only from an
environment variable or a file, is refused inside the configuration itself, and no repr or log
line ever shows it. Without inboxes configured there is one inbox, ``default``, that accepts
pages served from this machine (``http://127.0.0.1:*``, ``http://localhost:*``) so that
``omnihub up`` can be tried at once.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.config_source import load_source
from connectors.errors import ConnectorError

DEFAULT_INBOX = "default"
LOCAL_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")
DEFAULT_UPLOAD_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
)
UPLOADABLE = frozenset(DEFAULT_UPLOAD_TYPES)
_PORTS = {"http": 80, "https": 443}


class ConfigError(ConnectorError):
    """The web chat configuration is wrong; the message says what to change."""


def _split_origin(origin: str) -> tuple[str, str, str] | None:
    """(scheme, host, port) of an origin, ports made explicit; None if it is not one."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    return parts.scheme, parts.hostname, str(port or _PORTS[parts.scheme])


class OriginPattern:
    """``https://shop.example.ir``, ``https://*.example.ir`` (any subdomain),
    ``http://127.0.0.1:*`` (any port), or ``*`` (any page: for trials only)."""

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        self.any = self.text == "*"
        if self.any:
            return
        port_any = self.text.endswith(":*")
        base = self.text[:-2] if port_any else self.text
        self.sub = "://*." in base
        split = _split_origin(base.replace("://*.", "://", 1))
        if split is None:
            raise ValueError(
                f"{text!r} is not an origin (scheme://host[:port], e.g. https://shop.example.ir,"
                " https://*.example.ir or http://127.0.0.1:*)"
            )
        self.scheme, self.host, port = split
        self.port = "*" if port_any else port

    def matches(self, origin: str) -> bool:
        if self.any:
            return True
        split = _split_origin(origin)
        if split is None:
            return False
        scheme, host, port = split
        if scheme != self.scheme or (self.port != "*" and port != self.port):
            return False
        return host.endswith("." + self.host) if self.sub else host == self.host


@functools.lru_cache(maxsize=1024)
def _pattern(text: str) -> OriginPattern:
    return OriginPattern(text)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Inbox(_Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="named by data-inbox")
    team: str | None = Field(None, max_length=128, description="title of the chat panel")
    allowed_origins: list[str] = Field(min_length=1, max_length=100)
    secret_env: str | None = Field(None, description="environment variable holding the secret")
    secret_file: Path | None = Field(None, description="file holding it (a mounted secret)")
    max_text_chars: int = Field(4000, ge=1, le=100_000)
    visitor_rate: float = Field(20.0, gt=0, description="messages a minute per visitor")
    visitor_burst: int = Field(10, ge=1, description="messages a visitor may send at once")
    ip_rate: float = Field(120.0, gt=0, description="messages a minute per address")
    ip_burst: int = Field(40, ge=1)
    upload_max_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    upload_types: list[str] = Field(default_factory=lambda: list(DEFAULT_UPLOAD_TYPES))

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("secret" in data or "hmac_secret" in data):
            raise ValueError(
                "a secret must not be written into the configuration: use secret_env "
                "(an environment variable) or secret_file (a secret file)"
            )
        return data

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for item in value:
            OriginPattern(item)  # raises ValueError naming the bad one
        return value

    @field_validator("upload_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - UPLOADABLE)
        if unknown:
            known = ", ".join(sorted(UPLOADABLE))
            raise ValueError(f"cannot check uploads of type {unknown[0]!r}; known: {known}")
        return value

    def __repr__(self) -> str:  # never the secret (it is not held here anyway)
        return f"Inbox(id={self.id!r}, origins={len(self.allowed_origins)})"

    def origin_allowed(self, origin: str | None) -> bool:
        if not origin:
            return False
        return any(_pattern(p).matches(origin) for p in self.allowed_origins)

    def secret(self) -> bytes | None:
        """Read the identity secret now (it may rotate); None when none is configured."""
        if self.secret_env:
            value = os.environ.get(self.secret_env)
            if not value:
                raise ConfigError(f"environment variable {self.secret_env} is not set")
            return value.encode()
        if self.secret_file:
            try:
                value = self.secret_file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"cannot read {self.secret_file}: {exc.strerror}") from None
            if not value:
                raise ConfigError(f"{self.secret_file} is empty")
            return value.encode()
        return None


def parse_inboxes(data: Any) -> list[Inbox]:
    """Inboxes from decoded JSON/TOML: a list, or a table with an ``inbox`` list."""
    if isinstance(data, dict):
        data = data.get("inbox", data.get("inboxes"))
    if not isinstance(data, list) or not data:
        raise ConfigError("web chat inboxes must be a non-empty list (TOML: [[inbox]] tables)")
    inboxes = []
    for n, item in enumerate(data, 1):
        try:
            inboxes.append(Inbox.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ())) or "inbox"
            msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
            name = item.get("id") if isinstance(item, dict) else None
            which = f"{n} ({name})" if isinstance(name, str) else str(n)
            raise ConfigError(f"web chat inbox {which}: {loc}: {msg}") from None
    seen: set[str] = set()
    for inbox in inboxes:
        if inbox.id in seen:
            raise ConfigError(f"web chat inbox {inbox.id} is configured twice")
        seen.add(inbox.id)
        if inbox.secret_env or inbox.secret_file:
            inbox.secret()  # a missing secret fails at start, not at the first sign-in
    return inboxes


def default_inbox(own_origin: str) -> Inbox:
    """The inbox of a fresh install: pages on this machine, including the demo page."""
    origins = list(LOCAL_ORIGINS)
    if not any(OriginPattern(p).matches(own_origin) for p in origins):
        origins.append(own_origin)
    return Inbox.model_validate({"id": DEFAULT_INBOX, "allowed_origins": origins})


def load_inboxes(*, inline: str | None, path: Path | None, own_origin: str) -> list[Inbox]:
    """The configured inboxes, or the default inbox when none are."""
    data = load_source(inline=inline, path=path, env="OMNIHUB_WEBCHAT_INBOXES", error=ConfigError)
    return [default_inbox(own_origin)] if data is None else parse_inboxes(data)


def origin_of(url: str) -> str:
    """scheme://host:port of a URL (the connector's own pages)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
