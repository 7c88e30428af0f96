from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.models.enums import BookingStatus, PaymentStatus
from app.schemas.common import Money, ORMModel, Text


class BookingCreate(BaseModel):
    event_id: int = Field(strict=True, ge=1, le=2**63 - 1)
    quantity: int = Field(strict=True, ge=1, description="Tickets; at most MAX_TICKETS_PER_BOOKING")
    reservation_id: int | None = Field(None, strict=True, ge=1, le=2**63 - 1)
    payment_method: Text | None = Field(None, min_length=1, max_length=32)
    notes: Text | None = Field(None, max_length=1000)


class BookingRead(ORMModel):
    id: int
    user_id: int
    event_id: int
    booking_reference: str
    quantity: int
    total_amount: Money
    currency: str
    status: BookingStatus
    payment_status: PaymentStatus
    booking_date: datetime
    expires_at: datetime | None
    confirmed_at: datetime | None
    cancelled_at: datetime | None
    payment_method: str | None
    payment_reference: str | None
    notes: str | None
    reservation_id: int | None
    waitlist_entry_id: int | None
    version: int
    created_at: datetime
    updated_at: datetime
    is_active: bool
    is_expired: bool


class BookingStatusRead(ORMModel):
    id: int
    booking_reference: str
    status: BookingStatus
    payment_status: PaymentStatus
    expires_at: datetime | None
    is_active: bool
    is_expired: bool
