"""All omnihub settings: one pydantic-settings class, env prefix ``OMNIHUB_``.

Every setting has a default that works on the embedded stack (`omnihub up`). In production,
point ``OMNIHUB_KAFKA_BOOTSTRAP`` and ``OMNIHUB_MONGO_URI`` at real servers.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
from pathlib import Path
from typing import Annotated

import phonenumbers
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from unify.identifiers import InvalidIdentifier, parse_identifier
from unify.resolver import Policy

# The router's and the pipeline worker's default fetch waits, s. An offer crosses two broker
# hops (API → worker, worker → router); tansu holds each fetch for its whole wait, so a hop
# costs about half of it. The worker's wait also sets how many messages its batches gather.
ROUTER_FETCH_WAIT = 0.03
WORKER_FETCH_WAIT = 0.05


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNIHUB_", extra="ignore")

    # -- where things live -------------------------------------------------------------------
    data_dir: Path = Field(Path(".omnihub"), description="folder holding all embedded data")
    host: str = Field("127.0.0.1", description="address every embedded service binds")

    # -- ports of the embedded stack (each settable so two stacks can run side by side) -----
    api_port: int = Field(8400, description="public HTTP API and agent WebSocket")
    worker_port: int = Field(8401, description="pipeline worker /healthz and /metrics")
    kafka_port: int = Field(9400, description="embedded Kafka-compatible broker (tansu)")
    s3_port: int = Field(9401, description="embedded S3 server holding the broker's data")
    mongo_port: int = Field(27400, description="embedded MongoDB-compatible server")

    # -- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None, description="host:port[,host:port]; unset = the embedded broker"
    )
    kafka_idempotence: bool | None = Field(
        None, description="producer idempotence; unset = on for real Kafka, off for embedded"
    )
    partitions: int = Field(4, ge=1, description="partitions of the topics omnihub creates")
    replication_factor: int = Field(1, ge=1)
    kafka_session_timeout: float = Field(6.0, description="consumer group session timeout, s")
    kafka_heartbeat_interval: float = Field(1.0, description="consumer heartbeat interval, s")
    kafka_fetch_wait: float = Field(
        0.1,
        gt=0,
        le=10,
        description="longest a consumer fetch waits for new records, s (the worker and the "
        "router wait the shorter of this and their own defaults; tansu answers a waiting "
        "fetch only when the wait ends, so this bounds the delay of every message; real "
        "Kafka answers at once, a short wait costs only idle polls)",
    )

    broker_retention_hours: float = Field(
        24.0,
        ge=0,
        description="embedded broker: delete record batches older than this many hours once "
        "every consumer group has read them (0 = keep everything; hub/retention.py: tansu "
        "lists every stored batch of a partition on each fetch, so kept batches slow it down)",
    )
    broker_retention_batches: int = Field(
        20,
        ge=0,
        description="embedded broker: keep at most this many record batches per partition "
        "that every consumer group has read, however young (0 = by age only): tansu lists "
        "every batch a partition keeps on each fetch, so each kept batch costs every fetch",
    )
    broker_retention_interval: float = Field(
        2.0,
        gt=0,
        description="embedded broker: seconds between two retention sweeps (a slow sweep "
        "spaces the next ones out to ten times its duration)",
    )

    # -- MongoDB -----------------------------------------------------------------------------
    mongo_uri: str | None = Field(None, description="mongodb:// URI; unset = embedded server")
    mongo_db: str = Field("omnihub")

    # -- pipeline ----------------------------------------------------------------------------
    app_id: str = Field("omnihub-pipeline", description="Faust app id = consumer group")
    batch_size: int = Field(
        2000,
        ge=1,
        description="ingest batch: at most this many events (2000 rather than 500: a backlog "
        "is written in fewer, larger batches, identity resolution ~14 % faster)",
    )
    batch_within: float = Field(
        0.02,
        gt=0,
        description="ingest batch: while busy, the next batch is taken this long after the "
        "last one was done, s (0.02 rather than 0.05: at 100 msg/s a message reached the "
        "timeline ~15 ms sooner, with no loss of ingest throughput)",
    )
    batch_quiet: float = Field(
        0.002, gt=0, description="ingest batch: taken once no new event came for this long, s"
    )
    reopen_window: float = Field(
        7 * 86400.0, ge=0, description="a customer message within this many seconds of "
        "resolving a conversation reopens it; later ones open a new conversation",
    )
    store_retry_max: float = Field(10.0, description="longest backoff between store retries, s")

    # -- identities --------------------------------------------------------------------------
    default_region: str = Field("IR", description="region for phone numbers without +country")

    identity_blocklist: list[str] = Field(
        default_factory=lambda: [
            "email:noreply@*",
            "email:no-reply@*",
            "email:mailer-daemon@*",
            "email:postmaster@*",
        ],
        description="identifiers never used to link customers: your own support numbers and "
        "addresses, shared lines; raw forms are normalised, globs (*) allowed. JSON list in env",
    )
    identity_caps: dict[str, int] = Field(
        default_factory=lambda: {"phone": 5, "email": 10, "telegram": 3, "webchat": 50, "api": 10},
        description="most identifiers of a kind per customer; a merge above it is a suggestion",
    )

    verification_senders: dict[str, str] = Field(
        default_factory=lambda: {"email": "support@omnihub.localhost", "sms": "omnihub"},
        description="channel → inbox/number that sends verification codes (JSON object)",
    )

    # -- API ---------------------------------------------------------------------------------
    api_token: SecretStr | None = Field(
        None, description="bearer token of systems and admins; unset = token file in data dir"
    )
    max_body_bytes: int = Field(1_048_576, description="larger request bodies get 413")
    public_url: str | None = Field(None, description="URL printed for users; unset = derived")
    api_outbound_group: str = Field(
        "omnihub-api-outbound",
        description="consumer group putting api-channel replies on the customer's timeline",
    )

    # -- router ------------------------------------------------------------------------------
    offer_timeout: float = Field(30.0, gt=0, description="seconds an agent has to accept")
    router_group: str = Field("omnihub-router", description="router consumer group")
    router_fetch_wait: float | None = Field(
        None,
        gt=0,
        le=10,
        description="longest the router's fetch of customer events waits, s; unset = 0.03, "
        "or kafka_fetch_wait if shorter: on tansu an offer waits out about half of it, and "
        "the short wait costs only this one consumer's polls",
    )
    worker_fetch_wait: float | None = Field(
        None,
        gt=0,
        le=10,
        description="longest the pipeline worker's fetch of inbound messages waits, s; unset = "
        "0.05, or kafka_fetch_wait if shorter: on tansu a message waits out about half of it "
        "before the worker sees it (at 100 msg/s, 50 ms instead of 100 cut an offer's p50 by "
        "9-35 ms and raised ingest throughput; about 0.5 % of a core more on an idle stack)",
    )
    sticky_window: float = Field(
        86400.0, ge=0, description="seconds the last agent of a customer is preferred"
    )
    presence_timeout: float = Field(
        20.0, gt=0, description="an agent silent this long (no socket, no heartbeat) is offline"
    )
    default_capacity: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=lambda: {
            "webchat": 3,
            "telegram": 3,
            "sms": 5,
            "api": 5,
            "email": 10,
            "call": 1,
        },
        description="conversations an agent holds at once per channel (JSON object)",
    )
    default_agent_skills: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["lang:fa", "lang:en"],
        description="skills of an agent created without a skill list",
    )
    urgency_keywords: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "فوری",
            "اورژانسی",
            "شکایت",
            "کلاهبرداری",
            "استرداد",
            "بازپرداخت",
            "پس بگیرید",
            "urgent",
            "asap",
            "emergency",
            "complaint",
            "refund",
            "fraud",
            "chargeback",
        ],
        description="words that raise a conversation's priority (JSON list)",
    )
    vip_segments: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["vip"], description="customer segments that raise priority"
    )
    skilled_segments: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["vip"],
        description="customer segments that need an agent with skill segment:<name>",
    )
    account_skills: Annotated[dict[str, list[str]], NoDecode] = Field(
        default_factory=dict,
        description='skills required by inbox/account, e.g. {"loans@x.ir": ["product:loans"]}',
    )
    sla_first_response: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [3600.0, 900.0, 300.0],
        description="first-response target, seconds, by priority 0,1,2… (last repeats)",
    )
    sla_resolution: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [86400.0, 14400.0, 3600.0],
        description="resolution target, seconds, by priority 0,1,2… (last repeats)",
    )
    sla_warn_fraction: float = Field(
        0.2, gt=0, lt=1, description="alert when less than this fraction of a target is left"
    )
    session_ttl: float = Field(43200.0, gt=0, description="seconds an agent's login lasts")

    @field_validator(
        "default_capacity", "default_agent_skills", "urgency_keywords", "vip_segments",
        "skilled_segments", "account_skills", "sla_first_response", "sla_resolution",
        mode="before",
    )
    @classmethod
    def _router_collection(cls, value: object) -> object:
        """Router lists and maps from the environment: JSON, or a plain comma-separated list
        (``OMNIHUB_URGENCY_KEYWORDS=urgent,refund,فوری``)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text[:1] in "[{":
            try:
                return json.loads(text)
            except ValueError:
                pass
            try:  # str() of a Python list/dict, as a parent process may pass settings on
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise ValueError("not a JSON list/object") from None
        return [part.strip() for part in text.split(",") if part.strip()]

    # -- email channel (`omnihub connector email`; see README, Email) ------------------------
    email_smtp_port: int = Field(2525, description="inbound SMTP port: the final hop of your MTA")
    email_address: str = Field(
        "support@omnihub.localhost", description="the inbox used when no inboxes are configured"
    )
    email_inboxes: str | None = Field(
        None, description="inboxes as a JSON list of objects (address, team, smtp, imap)"
    )
    email_inboxes_file: Path | None = Field(
        None, description="inboxes in a TOML ([[inbox]] tables) or JSON file"
    )
    email_hostname: str = Field("omnihub.localhost", description="name in the SMTP greeting")
    email_max_message_bytes: int = Field(
        26_214_400, ge=1024, description="larger mail is refused (SMTP 552)"
    )
    email_max_attachment_bytes: int = Field(
        20_971_520, ge=0, description="larger attachments stay only inside the raw mail"
    )
    email_health_port: int | None = Field(
        None, description="/healthz and /metrics of the email connector; unset = not served"
    )
    email_outbound_group: str = Field(
        "omnihub-email-outbound", description="consumer group sending agent replies"
    )
    email_send_retry_max: float = Field(
        60.0, gt=0, description="longest wait between delivery attempts of a reply, s"
    )
    email_send_give_up: float = Field(
        3600.0, gt=0, description="a reply the relay has not accepted after this long fails, s"
    )
    email_imap_idle: float = Field(300.0, gt=0, description="re-issue IMAP IDLE this often, s")
    email_imap_poll: float = Field(
        30.0, gt=0, description="poll interval for servers without IDLE (and a safety net), s"
    )
    email_imap_batch: int = Field(200, ge=1, description="IMAP messages fetched per step")

    # -- web chat channel (`omnihub connector webchat`; see README, Web chat) ---------------
    webchat_port: int = Field(8405, description="web chat: widget, WebSocket, uploads, demo")
    webchat_public_url: str | None = Field(
        None, description="URL browsers reach the web chat connector at; unset = derived"
    )
    webchat_inboxes: str | None = Field(
        None,
        description="web chat inboxes as a JSON list of objects (id, allowed_origins, team, "
        "secret_env/secret_file, limits); unset = one inbox 'default' for local pages",
    )
    webchat_inboxes_file: Path | None = Field(
        None, description="web chat inboxes in a TOML ([[inbox]] tables) or JSON file"
    )
    webchat_visitor_key: SecretStr | None = Field(
        None,
        description="key signing visitor tokens and file links; every replica needs the same "
        "one; unset = webchat_visitor_key_file, else a key file in the data dir",
    )
    webchat_visitor_key_file: Path | None = Field(None, description="file holding that key")
    webchat_outbound_group: str = Field(
        "omnihub-webchat-outbound", description="consumer group recording agent replies"
    )
    webchat_max_connections_per_ip: int = Field(
        100, ge=1, description="open chat sockets one address may hold (more get HTTP 429)"
    )
    webchat_send_queue: int = Field(
        64, ge=1, description="frames queued for one socket; a reader this far behind is dropped"
    )
    webchat_heartbeat: float = Field(
        25.0, gt=0, description="WebSocket ping interval, s; a socket silent for long is closed"
    )
    webchat_ack_timeout: float = Field(
        10.0, gt=0, description="longest wait for Kafka before telling the widget to retry, s"
    )
    webchat_history_limit: int = Field(
        100, ge=0, le=1000, description="messages of a visitor's history sent on (re)connect"
    )
    webchat_max_frame_bytes: int = Field(
        262_144, ge=4096, description="a larger WebSocket frame closes the socket (1009)"
    )
    webchat_forwarded_for: bool = Field(
        False,
        description="take the visitor's address from X-Forwarded-For (only behind your own "
        "proxy, which must set it)",
    )

    # -- embedded supervisor -----------------------------------------------------------------
    ready_timeout: float = Field(60.0, description="seconds to wait for the stack to be ready")
    stop_timeout: float = Field(8.0, description="seconds to wait for all children to stop")
    log_level: str = Field("info")

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r}; use a two-letter code such as IR, DE, US")
        return region

    def identity_policy(self) -> Policy:
        """The resolver's guard rails, blocklist entries normalised like identifiers."""
        entries: set[str] = set()
        for raw in self.identity_blocklist:
            if "*" in raw or "?" in raw:
                entries.add(raw.strip().lower())
                continue
            try:
                entries.add(parse_identifier(raw, default_region=self.default_region))
            except InvalidIdentifier as exc:
                raise ValueError(f"identity_blocklist entry is not an identifier: {exc}") from None
        return Policy(blocklist=frozenset(entries), caps=dict(self.identity_caps))

    # ----------------------------------------------------------------------------------------
    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def embedded_mongo(self) -> bool:
        return self.mongo_uri is None

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"{self.host}:{self.kafka_port}"

    def _own_wait(self, told: float | None, default: float) -> float:
        """A consumer's own fetch wait: as told, else its default unless the stack's is shorter."""
        return told if told is not None else min(default, self.kafka_fetch_wait)

    @property
    def router_wait(self) -> float:
        return self._own_wait(self.router_fetch_wait, ROUTER_FETCH_WAIT)

    @property
    def worker_wait(self) -> float:
        return self._own_wait(self.worker_fetch_wait, WORKER_FETCH_WAIT)

    @property
    def idempotence(self) -> bool:
        if self.kafka_idempotence is not None:
            return self.kafka_idempotence
        # tansu rejects InitProducerId v0 (INFRA.md quirk 1); exactly-once effect comes from
        # idempotent writes anyway.
        return not self.embedded_kafka

    @property
    def mongo_url(self) -> str:
        if self.mongo_uri:
            return self.mongo_uri
        return f"mongodb://{self.host}:{self.mongo_port}/?retryWrites=false&directConnection=true"

    @property
    def api_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.api_port}"

    @property
    def webchat_url(self) -> str:
        return (self.webchat_public_url or f"http://{self.host}:{self.webchat_port}").rstrip("/")

    def resolve_webchat_visitor_key(self) -> bytes:
        """The key signing visitor tokens: setting, key file, or one created in the data dir."""
        if self.webchat_visitor_key is not None:
            key = self.webchat_visitor_key.get_secret_value().strip()
            if len(key) < 16:
                raise ValueError(
                    "OMNIHUB_WEBCHAT_VISITOR_KEY is shorter than 16 characters; make one with "
                    "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
            return key.encode()
        path = self.webchat_visitor_key_file or self.data_dir / "webchat-visitor-key"
        if path.exists():
            key = path.read_text().strip()
            if len(key) < 16:
                raise ValueError(f"{path}: the web chat visitor key is shorter than 16 characters")
            return key.encode()
        if self.webchat_visitor_key_file is not None:
            raise FileNotFoundError(f"web chat visitor key file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        # written whole under another name, then linked: two processes starting at once agree
        # on one key, and nobody ever reads a half-written file
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_text().strip().encode()

    @property
    def token_file(self) -> Path:
        return self.data_dir / "api-token"

    def resolve_api_token(self, *, create: bool = False) -> str:
        """The API token: from settings, else from the token file (created if asked)."""
        if self.api_token is not None:
            return self.api_token.get_secret_value()
        path = self.token_file
        if path.exists():
            return path.read_text().strip()
        if not create:
            raise FileNotFoundError(
                f"no API token: set OMNIHUB_API_TOKEN or create {path} (omnihub up does)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        path.touch(mode=0o600)
        path.write_text(token + "\n")
        return token
