from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from app.models.enums import ReservationStatus
from app.schemas.common import IsoDateTime, Money, ORMModel, Text, money_sent


class EventAvailabilityRead(ORMModel):
    id: int
    event_id: int
    event_name: str
    total_capacity: int
    available_capacity: int
    reserved_capacity: int
    confirmed_capacity: int
    price: Money
    currency: str
    sales_open: bool
    max_tickets_per_user: int | None
    starts_at: datetime | None
    ends_at: datetime | None
    version: int
    last_updated: datetime
    is_available: bool
    utilization_percentage: float


class EventAvailabilityUpsert(BaseModel):
    event_name: Text = Field(min_length=1, max_length=255)
    total_capacity: int = Field(strict=True, ge=0, le=10_000_000)
    price: Decimal = Field(ge=0, le=Decimal("9999999999.99"), decimal_places=2, json_schema_extra=money_sent)
    currency: Text = Field("USD", pattern=r"^[A-Z]{3}$")
    starts_at: IsoDateTime | None = None
    ends_at: IsoDateTime | None = None
    max_tickets_per_user: int | None = Field(
        None,
        ge=1,
        le=10_000,
        strict=True,
        description="Seats one buyer may hold or have bought for this event (holds, bookings, waitlist offers); "
        "null: no limit. A lower limit applies to new requests only.",
    )


class ReserveRequest(BaseModel):
    quantity: int = Field(strict=True, ge=1, description="Seats to hold; at most MAX_TICKETS_PER_BOOKING")


class ReservationRead(ORMModel):
    id: int
    event_id: int
    user_id: int
    quantity: int
    status: ReservationStatus
    expires_at: datetime
    created_at: datetime
    is_live: bool
