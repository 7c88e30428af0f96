from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.models.enums import WaitlistStatus
from app.schemas.common import ORMModel, Text


class WaitlistJoin(BaseModel):
    event_id: int = Field(strict=True, ge=1, le=2**63 - 1)
    quantity: int = Field(strict=True, ge=1, description="Tickets wanted; at most MAX_TICKETS_PER_BOOKING")


class WaitlistEntryRead(ORMModel):
    id: int
    user_id: int
    event_id: int
    quantity: int
    priority: int
    status: WaitlistStatus
    joined_at: datetime
    notified_at: datetime | None
    expires_at: datetime | None
    booked_at: datetime | None
    booking_id: int | None
    version: int
    created_at: datetime
    updated_at: datetime
    is_active: bool
    is_notification_expired: bool
    position: int | None = Field(None, description="Place in line, for pending entries (1 = next)")


class WaitlistAdminUpdate(BaseModel):
    # Documented as well as checked: a change needs a new priority or `remove: true`.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["priority"], "properties": {"priority": {"type": "integer"}}},
                {"required": ["remove"], "properties": {"remove": {"const": True}}},
            ]
        }
    )

    priority: int | None = Field(None, strict=True, ge=0, le=1_000_000)
    remove: bool = Field(False, strict=True)
    reason: Text | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _changes_something(self) -> WaitlistAdminUpdate:
        if self.priority is None and not self.remove:
            raise ValueError("give a new priority, or remove=true")
        return self
