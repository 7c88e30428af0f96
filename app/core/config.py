"""Every setting of the service, read once from the environment, `.env` and Zero."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from app.core.database_urls import READER_ATTRS, sqlalchemy_url
from app.core.zero_source import ZeroSettingsSource, ZeroUnavailableError

# Compose and Kubernetes secrets arrive as files here, one per setting (`jwt_secret`, `db_password`, ...).
SECRETS_DIR = Path("/run/secrets")
DEVELOPMENT_JWT_SECRET = "development-only-secret-not-for-production-use"
# Lets `make run` take the documented webhook at once; never applied outside development.
DEVELOPMENT_WEBHOOK_SECRET = "whsec_development_only_not_for_production"
MIN_PRODUCTION_SECRET_LENGTH = 32


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class RedisFailureMode(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False)

    service_name: str = "evently-bookings"
    environment: Environment = Environment.DEVELOPMENT
    # None: 127.0.0.1 in development (the development secrets are public), all interfaces in production.
    host: str | None = None
    port: int = Field(8002, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    log_level: str = "INFO"

    database_url: str | None = None
    database_read_url: str | None = None
    db_host: str | None = None
    db_port: int = Field(5432, ge=1, le=65535)
    db_name: str = "bookings"
    db_user: str = "postgres"
    db_password: SecretStr = SecretStr("")
    # 20 connections a process at most, 16 of them kept open between bursts: a connection opened
    # above what the pool keeps is closed when given back, and the next one pays asyncpg's set-up
    # and prepares its statements again (docs/scaling.md, the rush's fourth round).
    db_pool_size: int = Field(16, ge=1)
    db_max_overflow: int = Field(4, ge=0)
    db_pool_timeout_seconds: float = Field(5.0, gt=0)
    db_connect_timeout_seconds: float = Field(5.0, gt=0)
    db_command_timeout_seconds: float = Field(15.0, gt=0)
    # A pooled connection given back less than this long ago is not checked at its next checkout
    # (app/db/session.py); 0: every checkout checks.
    db_check_idle_seconds: float = Field(0.5, ge=0)
    # Off behind a transaction-mode pooler that cannot keep them (PgBouncer before 1.21).
    db_prepared_statements: bool = True
    # Pooled connections the booking path is rehearsed on at start-up (app/services/warm_up.py), at
    # most DB_POOL_SIZE; 0: none, and the first batches pay for compiling and preparing.
    warm_up_connections: int = Field(2, ge=0)

    redis_url: str | None = None
    redis_host: str | None = None
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_db: int = Field(0, ge=0)
    redis_password: SecretStr = SecretStr("")
    redis_use_tls: bool = False
    redis_socket_timeout_seconds: float = Field(0.5, gt=0)
    redis_sentinels: str | None = None
    redis_sentinel_service: str = "mymaster"
    redis_cluster_nodes: str | None = None
    redis_wait_replicas: int = Field(0, ge=0)
    redis_key_prefix: str = "evently:bookings-svc:"
    redis_breaker_failure_threshold: int = Field(3, ge=1)
    redis_breaker_reset_seconds: float = Field(5.0, gt=0)

    jwt_secret: SecretStr = SecretStr(DEVELOPMENT_JWT_SECRET)
    jwt_algorithm: str = "HS256"
    jwt_expiry_minutes: int = Field(30, ge=1)
    auth_redis_failure_mode: RedisFailureMode = RedisFailureMode.ALLOW
    auth_revocation_cache_seconds: float = Field(1.0, ge=0)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    booking_timeout_minutes: float = Field(15, gt=0)
    reservation_timeout_minutes: float = Field(10, gt=0)
    waitlist_notification_timeout_hours: float = Field(24, gt=0)
    max_tickets_per_booking: int = Field(10, ge=1)

    lock_timeout_seconds: float = Field(5.0, gt=0)
    lock_wait_seconds: float = Field(2.0, gt=0)
    lock_poll_seconds: float = Field(0.002, gt=0)
    lock_queue_seconds: float = Field(10.0, gt=0)
    version_conflict_retries: int = Field(5, ge=0)
    booking_batch_max: int = Field(256, ge=1)
    booking_batch_linger_ms: float = Field(3.0, ge=0, le=100)

    sweep_interval_seconds: float = Field(5.0, gt=0)
    sweep_batch_size: int = Field(200, ge=1)
    idempotency_ttl_hours: float = Field(24, ge=24)

    payment_webhook_secret: SecretStr = SecretStr("")
    payment_webhook_tolerance_seconds: int = Field(300, ge=1)

    events_channel_prefix: str = "evently:bookings"
    events_stream: str = "evently:bookings:stream"
    events_stream_maxlen: int = Field(100_000, ge=1)
    inbound_channel_prefix: str = "evently:events"
    outbox_poll_seconds: float = Field(2.0, gt=0)
    outbox_batch_size: int = Field(500, ge=1)
    # Under load a relay pass that publishes costs five PostgreSQL round trips and one to Redis,
    # however many messages it carries:
    # fewer passes leave more CPU for bookings (docs/scaling.md, the rush's eleventh round).
    outbox_min_interval_ms: float = Field(100.0, ge=0, le=1000)
    outbox_retention_hours: float = Field(72, gt=0)
    availability_cache_ttl_seconds: int = Field(300, ge=1)
    sse_heartbeat_seconds: float = Field(15.0, gt=0)
    # Bursts (issue 12): Redis connections are waited for, live streams are capped.
    redis_max_connections: int = Field(100, ge=1)
    redis_pool_timeout_seconds: float = Field(2.0, gt=0)
    sse_max_streams_per_user: int = Field(5, ge=1)
    sse_max_streams_per_instance: int = Field(1000, ge=1)

    rate_limit_per_minute: int = Field(0, ge=0)
    max_body_bytes: int = Field(65_536, ge=1024)
    max_header_bytes: int = Field(16_384, ge=1024)
    request_head_timeout_seconds: float = Field(10.0, gt=0)
    shutdown_timeout_seconds: float = Field(20.0, gt=0)
    background_tasks_enabled: bool = True

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("jwt_algorithm")
    @classmethod
    def _hmac_algorithm(cls, value: str) -> str:
        if value not in {"HS256", "HS384", "HS512"}:
            raise ValueError("must be HS256, HS384 or HS512 (a shared-secret algorithm)")
        return value

    @model_validator(mode="after")
    def _stream_holds_a_batch(self) -> Settings:
        # The relay recognises a repeated batch by the Stream's newest entries (app/services/outbox_relay.py).
        if self.events_stream_maxlen < self.outbox_batch_size:
            raise ValueError("EVENTS_STREAM_MAXLEN must be at least OUTBOX_BATCH_SIZE")
        return self

    @model_validator(mode="after")
    def _development_webhook_secret(self) -> Settings:
        self.payment_webhook_secret = webhook_secret_for(self.environment, self.payment_webhook_secret)
        return self

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> Settings:
        if not self.jwt_secret.get_secret_value():
            raise ValueError("JWT_SECRET must not be empty")
        if self.environment is Environment.PRODUCTION:
            secret = self.jwt_secret.get_secret_value()
            if secret == DEVELOPMENT_JWT_SECRET or len(secret) < MIN_PRODUCTION_SECRET_LENGTH:
                raise ValueError(
                    f"JWT_SECRET must be set to at least {MIN_PRODUCTION_SECRET_LENGTH} characters in production"
                )
            if len(self.payment_webhook_secret.get_secret_value()) < MIN_PRODUCTION_SECRET_LENGTH:
                raise ValueError(
                    f"PAYMENT_WEBHOOK_SECRET must be set to at least {MIN_PRODUCTION_SECRET_LENGTH} characters"
                    " in production"
                )
        if not self.database_url and not self.db_host:
            raise ValueError("DATABASE_URL or DB_HOST must be set")
        _one_redis_topology(self)
        return self

    @property
    def bind_host(self) -> str:
        if self.host:
            return self.host
        return "127.0.0.1" if self.environment is Environment.DEVELOPMENT else "0.0.0.0"

    @property
    def uses_development_jwt_secret(self) -> bool:
        return self.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET

    @property
    def sqlalchemy_database_url(self) -> str:
        if self.database_url:
            return sqlalchemy_url(self.database_url)
        password = self.db_password.get_secret_value()
        credentials = f"{self.db_user}:{password}" if password else self.db_user
        return f"postgresql+asyncpg://{credentials}@{self.db_host}:{self.db_port}/{self.db_name}"

    @property
    def sqlalchemy_read_database_url(self) -> str | None:
        """Replicas for reads that may lag; None: everything goes to DATABASE_URL."""
        return sqlalchemy_url(self.database_read_url, READER_ATTRS) if self.database_read_url else None

    @property
    def redis_sentinel_nodes(self) -> list[tuple[str, int]]:
        return parse_nodes(self.redis_sentinels or "")

    @property
    def redis_cluster_startup_nodes(self) -> list[tuple[str, int]]:
        return parse_nodes(self.redis_cluster_nodes or "")

    @property
    def redis_connection_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        scheme = "rediss" if self.redis_use_tls else "redis"
        password = self.redis_password.get_secret_value()
        auth = f":{password}@" if password else ""
        return f"{scheme}://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest priority first: explicit arguments, the environment, .env, Zero, then secret files
        # (SECRETS_DIR, looked at only when it exists: elsewhere pydantic-settings would warn).
        if getattr(file_secret_settings, "secrets_dir", None) is None and SECRETS_DIR.is_dir():
            file_secret_settings = SecretsSettingsSource(settings_cls, secrets_dir=SECRETS_DIR)
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            ZeroSettingsSource(settings_cls),
            file_secret_settings,
        )


def webhook_secret_for(environment: Environment, configured: SecretStr) -> SecretStr:
    """The configured webhook secret; in development, the documented one when none is set."""
    if environment is Environment.DEVELOPMENT and not configured.get_secret_value():
        return SecretStr(DEVELOPMENT_WEBHOOK_SECRET)
    return configured


def parse_nodes(value: str) -> list[tuple[str, int]]:
    """`host:port,host:port` -> [(host, port), ...]; a bracketed IPv6 host loses its brackets."""
    nodes = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def _one_redis_topology(settings: Settings) -> None:
    """Exactly one of: a single Redis (URL or host), Sentinels, a Cluster."""
    given = [
        name
        for name, value in (
            ("REDIS_URL/REDIS_HOST", settings.redis_url or settings.redis_host),
            ("REDIS_SENTINELS", settings.redis_sentinels),
            ("REDIS_CLUSTER_NODES", settings.redis_cluster_nodes),
        )
        if value
    ]
    if not given:
        raise ValueError("one of REDIS_URL, REDIS_HOST, REDIS_SENTINELS or REDIS_CLUSTER_NODES must be set")
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} are set together; give one Redis topology")
    parse_nodes(settings.redis_sentinels or "")
    parse_nodes(settings.redis_cluster_nodes or "")


class SettingsError(SystemExit):
    """Start-up refused because of a setting; carries the one line to print."""


def describe_validation_error(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]).upper() or "settings"
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message}")
    return "; ".join(problems)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, or exit with one line naming what is wrong."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        line = f"invalid settings: {describe_validation_error(exc)}"
    except ZeroUnavailableError as exc:
        line = f"invalid settings: could not fetch secrets from Zero: {exc}"
    print(line, file=sys.stderr)
    raise SettingsError(2)
