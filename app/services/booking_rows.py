"""A new booking's row: its reference, its amount, its fields. The one builder of booking rows,
for the hot batch (inserted with its audit rows and messages) and for bookings of seats already held
(the ORM)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Numeric, ScalarSelect, cast, func, select
from sqlalchemy.dialects.postgresql import REGCLASS

from app.core.config import Settings
from app.core.errors import AmountOutOfRangeError
from app.db.base import table_of
from app.models.booking import Booking
from app.models.enums import PaymentStatus
from app.models.event_availability import EventAvailability

BOOKINGS = table_of(Booking)


def new_booking_ids(count: ColumnElement[int]) -> ScalarSelect[Any]:
    """`count` new bookings' ids, as an array, from the table's own sequence: taken ahead, so that
    the rows, their audit rows and their messages can all be written in one statement."""
    sequence = cast(func.pg_get_serial_sequence(BOOKINGS.name, "id"), REGCLASS)
    return select(func.array_agg(func.nextval(sequence))).select_from(func.generate_series(1, count)).scalar_subquery()


REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


def _largest_storable(column_type: object) -> Decimal:
    """The largest amount a `NUMERIC(precision, scale)` column holds: 9999999999.99 for (12, 2)."""
    assert isinstance(column_type, Numeric) and column_type.precision is not None and column_type.scale is not None
    return Decimal(10) ** (column_type.precision - column_type.scale) - Decimal(1).scaleb(-column_type.scale)


MAX_TOTAL_AMOUNT = _largest_storable(BOOKINGS.c.total_amount.type)


def booking_amount(event: EventAvailability, quantity: int) -> Decimal:
    """What `quantity` seats cost, refused when a booking could not store it."""
    if quantity > most_seats_storable(event):
        raise amount_out_of_range(event, quantity)
    return event.price * quantity


def most_seats_storable(event: EventAvailability) -> int | float:
    """The most seats of this event one booking's `total_amount` can hold the price of."""
    return int(MAX_TOTAL_AMOUNT // event.price) if event.price > 0 else float("inf")


def amount_out_of_range(event: EventAvailability, quantity: int) -> AmountOutOfRangeError:
    return AmountOutOfRangeError(
        f"{quantity} seats at {event.price} {event.currency} cost more than a booking can hold "
        f"({MAX_TOTAL_AMOUNT} {event.currency}); book fewer seats"
    )


def new_booking_reference() -> str:
    """`BK-` and ten random characters: short to read out, 50 bits, not derivable from another."""
    bits = secrets.randbits(50)
    return "BK-" + "".join(REFERENCE_ALPHABET[(bits >> shift) & 31] for shift in range(0, 50, 5))


def payment_deadline(settings: Settings, now: datetime) -> datetime:
    """When a booking made now lapses unless paid."""
    return now + timedelta(minutes=settings.booking_timeout_minutes)


def booking_row(
    user_id: int, event: EventAvailability, quantity: int, now: datetime, expires_at: datetime, **fields: Any
) -> dict[str, Any]:
    """A new booking of `quantity` seats of `event`, its status left to the booking's state machine.
    Its amount must be storable (checked before: `booking_amount`, `most_seats_storable`).
    `fields`: payment method, notes, the hold or waitlist entry it comes from."""
    return {
        "user_id": user_id,
        "event_id": event.event_id,
        "booking_reference": new_booking_reference(),
        "quantity": quantity,
        "total_amount": event.price * Decimal(quantity),
        "currency": event.currency,
        "payment_status": PaymentStatus.PENDING,
        "booking_date": now,
        "expires_at": expires_at,
        "version": 1,
        "created_at": now,
        "updated_at": now,
        **fields,
    }
