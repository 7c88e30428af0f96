from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WaitingRoomSettings(BaseModel):
    model_config = ConfigDict(
        strict=True,
        json_schema_extra={"examples": [{"enabled": True, "admit_per_minute": 600, "admission_minutes": 10}]},
    )

    enabled: bool
    admit_per_minute: int = Field(ge=1, le=1_000_000, description="Buyers admitted a minute, across all instances")
    admission_minutes: int = Field(10, ge=1, le=24 * 60, description="How long an admission lasts")


class WaitingRoomOverview(WaitingRoomSettings):
    event_id: int
    waiting: int = Field(description="Buyers in the line not yet admitted")
    admitted: int = Field(description="Buyers admitted so far")
    admission_rate_per_minute: float = Field(description="Measured over the last 10 s or more; as set until then")
    oldest_wait_seconds: float = Field(description="How long the first buyer still waiting has waited")


class WaitingRoomStatus(BaseModel):
    ticket_id: str
    event_id: int
    room_enabled: bool = Field(
        description="false: the event sells without admission right now; a place taken meanwhile is kept "
        "for when the room is switched on"
    )
    status: Literal["waiting", "admitted"]
    position: int = Field(description="Buyers ahead of you, counting you (0 once admitted); never goes up")
    estimated_wait_seconds: int = Field(description="From the measured admission rate")
    poll_after_seconds: int = Field(description="When to ask again, if you poll instead of streaming")
    admission_token: str | None = Field(description="Send it as X-Admission-Token to hold, book or join the waitlist")
    admission_expires_at: datetime | None
    joined_at: datetime | None
    admitted_at: datetime | None = Field(description="When the line reached your ticket")
