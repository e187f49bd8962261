"""All omnihub settings: one pydantic-settings class, env prefix ``OMNIHUB_``.

Every setting has a default that works on the embedded stack (`omnihub up`). In production,
point ``OMNIHUB_KAFKA_BOOTSTRAP`` and ``OMNIHUB_MONGO_URI`` at real servers.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import phonenumbers
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    # -- MongoDB -----------------------------------------------------------------------------
    mongo_uri: str | None = Field(None, description="mongodb:// URI; unset = embedded server")
    mongo_db: str = Field("omnihub")

    # -- pipeline ----------------------------------------------------------------------------
    app_id: str = Field("omnihub-pipeline", description="Faust app id = consumer group")
    batch_size: int = Field(500, ge=1, description="ingest batch: at most this many events")
    batch_within: float = Field(0.05, gt=0, description="ingest batch: at most this long, s")
    store_retry_max: float = Field(10.0, description="longest backoff between store retries, s")

    # -- identities --------------------------------------------------------------------------
    default_region: str = Field("IR", description="region for phone numbers without +country")

    # -- API ---------------------------------------------------------------------------------
    api_token: SecretStr | None = Field(
        None, description="bearer token of systems and admins; unset = token file in data dir"
    )
    max_body_bytes: int = Field(1_048_576, description="larger request bodies get 413")
    public_url: str | None = Field(None, description="URL printed for users; unset = derived")

    # -- router ------------------------------------------------------------------------------
    offer_timeout: float = Field(30.0, gt=0, description="seconds an agent has to accept")
    router_group: str = Field("omnihub-router", description="router consumer group")

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
