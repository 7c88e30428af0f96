from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.schemas.availability import EventAvailabilityRead
from app.schemas.booking import BookingRead
from app.schemas.common import ORMModel, Text


class AuditEntryRead(ORMModel):
    id: int
    occurred_at: datetime
    actor_type: str
    actor_id: int | None
    action: str
    entity_type: str
    entity_id: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


class AdminBookingRead(BookingRead):
    audit: list[AuditEntryRead]


class ConfirmRequest(BaseModel):
    note: Text | None = Field(None, max_length=1000)


class RefundRequest(BaseModel):
    reason: Text | None = Field(None, max_length=1000)


class EventOverviewRead(EventAvailabilityRead):
    bookings_by_status: dict[str, int]
    waitlist_length: int
