"""Lifecycle messages (SPEC section 5), written to the outbox in the change's transaction.

Their payloads follow the message schemas (app/schemas/messages.py), not the API's models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import table_of
from app.models.event_availability import EventAvailability
from app.models.outbox import OutboxMessage
from app.schemas.booking import BookingRead
from app.schemas.messages import (
    BOOKING_DATA_V1_FIELDS,
    SCHEMA_VERSION,
    AvailabilityDataV1,
    BookingDataV1,
)


def _renders_as(api_model: type[BaseModel], message_model: type[BaseModel]) -> bool:
    """Whether the API model's JSON rendering is the message's: the same fields, of the same types."""

    def fields(model: type[BaseModel]) -> list[tuple[str, Any, list[Any]]]:
        return [(name, field.annotation, field.metadata) for name, field in model.model_fields.items()]

    return fields(api_model) == fields(message_model)


# Decided once: per booking of a rush, the batch's answer is its message's data as it is.
BOOKING_READ_IS_V1 = _renders_as(BookingRead, BookingDataV1)

OUTBOX_TABLE = table_of(OutboxMessage)

# Message type -> the channel suffix it is published on (`evently:bookings:<kind>`).
KIND_BY_TYPE = {
    "BookingCreated": "created",
    "BookingConfirmed": "confirmed",
    "BookingCancelled": "cancelled",
    "BookingExpired": "expired",
    "BookingRefunded": "refunded",
    "BookingCompleted": "completed",
    "BookingPaymentFailed": "payment_failed",
    "WaitlistJoined": "waitlist_joined",
    "WaitlistNotified": "waitlist_notified",
    "WaitlistBooked": "waitlist_booked",
    "WaitlistExpired": "waitlist_expired",
    "WaitlistCancelled": "waitlist_cancelled",
    "AvailabilityChanged": "availability_changed",
}


def booking_message_of(message_type: str, rendered: dict[str, Any], now: datetime) -> dict[str, Any]:
    """From a booking already rendered to JSON, as version 1 or as `BookingRead` (the batch's answer,
    for every booking of a rush): the rendering itself while the API model renders as version 1,
    else version 1 made of it."""
    if BOOKING_READ_IS_V1:
        data = rendered
    else:
        data = BookingDataV1.model_validate({name: rendered[name] for name in BOOKING_DATA_V1_FIELDS}).model_dump(
            mode="json"
        )
    return _message(message_type, data["event_id"], data["user_id"], now, booking_id=data["id"], booking_data=data)


def waitlist_message_of(message_type: str, data: dict[str, Any], now: datetime) -> dict[str, Any]:
    """From an entry already rendered as version 1."""
    return _message(
        message_type, data["event_id"], data["user_id"], now, waitlist_entry_id=data["id"], waitlist_data=data
    )


def availability_message(event: EventAvailability, now: datetime) -> dict[str, Any]:
    data = AvailabilityDataV1.model_validate(event).model_dump(mode="json")
    return _message("AvailabilityChanged", event.event_id, None, now, availability_data=data)


def _message(message_type: str, event_id: int, user_id: int | None, now: datetime, **body: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": message_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": now.isoformat(),
        "event_id": event_id,
        "user_id": user_id,
        **body,
    }


def outbox_row(message: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "message_id": uuid.UUID(message["id"]),
        "kind": KIND_BY_TYPE[message["type"]],
        "event_id": message["event_id"],
        "payload": message,
        "created_at": now,
    }


async def backlog(session: AsyncSession, now: datetime) -> tuple[int, float]:
    """How many messages wait to be published, and the age in seconds of the oldest."""
    waiting, oldest = (
        await session.execute(
            select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.published_at.is_(None))
        )
    ).one()
    return int(waiting), (now - oldest).total_seconds() if oldest else 0.0
