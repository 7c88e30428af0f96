"""What the operator endpoints answer. Documentation only: the routes render their own dicts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DependencyCheck(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["up", "down"]
    latency_ms: float | None = Field(None, description="When up")
    error: str | None = Field(None, description="When down: the kind of failure")
    outbox_backlog: int | None = Field(None, description="Database: messages not yet published")
    outbox_oldest_age_seconds: float | None = Field(None, description="Database: age of the oldest of them")


class HealthRead(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    checks: dict[str, DependencyCheck] = Field(description="`database` and `redis`")


class InfoSettingsRead(BaseModel):
    model_config = ConfigDict(extra="allow")

    booking_timeout_minutes: float
    reservation_timeout_minutes: float
    waitlist_notification_timeout_hours: float
    max_tickets_per_booking: int
    jwt_algorithm: str
    cors_origins: list[str]
    events_channel_prefix: str
    events_stream: str
    rate_limit_per_minute: int


class InfoRead(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    environment: str
    capabilities: list[str]
    settings: InfoSettingsRead
