"""The platform's messages (README "Messages to and from the platform"), schema_version 1.

These are a contract of their own, not the API's response models: a field added to `BookingRead`,
`WaitlistEntryRead` or `EventAvailabilityRead` is not in these messages until a new schema version
says so. `is_active`, `is_expired`, `is_notification_expired`, `is_available` and
`utilization_percentage` are part of version 1: their value at the moment of the change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from app.models.enums import BookingStatus, PaymentStatus, WaitlistStatus
from app.schemas.common import Money

SCHEMA_VERSION = 1

BookingMessageType = Literal[
    "BookingCreated",
    "BookingConfirmed",
    "BookingCancelled",
    "BookingExpired",
    "BookingRefunded",
    "BookingCompleted",
    "BookingPaymentFailed",
]
WaitlistMessageType = Literal[
    "WaitlistJoined", "WaitlistNotified", "WaitlistBooked", "WaitlistExpired", "WaitlistCancelled"
]


class MessageData(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="forbid")


class BookingDataV1(MessageData):
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


class WaitlistDataV1(MessageData):
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


class AvailabilityDataV1(MessageData):
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
    max_tickets_per_user: int | None  # in version 1 since the per-buyer limit (README's example shows it)
    starts_at: datetime | None
    ends_at: datetime | None
    version: int
    last_updated: datetime
    is_available: bool
    utilization_percentage: float


class EnvelopeV1(BaseModel):
    """What every message carries: `id` stays the same across redeliveries."""

    model_config = ConfigDict(extra="forbid")

    id: UUID
    type: str
    schema_version: Literal[1]
    occurred_at: datetime
    event_id: int
    user_id: int | None


class BookingMessageV1(EnvelopeV1):
    type: BookingMessageType
    user_id: int
    booking_id: int
    booking_data: BookingDataV1


class WaitlistMessageV1(EnvelopeV1):
    type: WaitlistMessageType
    user_id: int
    waitlist_entry_id: int
    waitlist_data: WaitlistDataV1


class AvailabilityMessageV1(EnvelopeV1):
    type: Literal["AvailabilityChanged"]
    user_id: None
    availability_data: AvailabilityDataV1


BOOKING_DATA_V1_FIELDS = tuple(BookingDataV1.model_fields)
