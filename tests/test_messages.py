"""The platform's messages keep schema_version 1 (app/schemas/messages.py), whatever the API adds."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.schemas.booking import BookingRead
from app.schemas.messages import AvailabilityMessageV1, BookingDataV1, BookingMessageV1, WaitlistMessageV1
from app.services import outbox
from tests.conftest import Api

# schema_version 1, as the README's examples show it: changing a list here is a new schema version.
ENVELOPE = ["id", "type", "schema_version", "occurred_at", "event_id", "user_id"]
BOOKING_DATA = [
    "id", "user_id", "event_id", "booking_reference", "quantity", "total_amount", "currency", "status",
    "payment_status", "booking_date", "expires_at", "confirmed_at", "cancelled_at", "payment_method",
    "payment_reference", "notes", "reservation_id", "waitlist_entry_id", "version", "created_at", "updated_at",
    "is_active", "is_expired",
]  # fmt: skip
WAITLIST_DATA = [
    "id", "user_id", "event_id", "quantity", "priority", "status", "joined_at", "notified_at", "expires_at",
    "booked_at", "booking_id", "version", "created_at", "updated_at", "is_active", "is_notification_expired",
]  # fmt: skip
AVAILABILITY_DATA = [
    "id", "event_id", "event_name", "total_capacity", "available_capacity", "reserved_capacity",
    "confirmed_capacity", "price", "currency", "sales_open", "max_tickets_per_user", "starts_at", "ends_at",
    "version", "last_updated", "is_available", "utilization_percentage",
]  # fmt: skip
# Per message type: the schema, the envelope's own fields, the data field and its fields.
V1: dict[str, tuple[type[BaseModel], list[str], str, list[str]]] = {
    "Booking": (BookingMessageV1, ["booking_id", "booking_data"], "booking_data", BOOKING_DATA),
    "Waitlist": (WaitlistMessageV1, ["waitlist_entry_id", "waitlist_data"], "waitlist_data", WAITLIST_DATA),
    "AvailabilityChanged": (AvailabilityMessageV1, ["availability_data"], "availability_data", AVAILABILITY_DATA),
}


def schema_of(message_type: str) -> tuple[type[BaseModel], list[str], str, list[str]]:
    return next(v1 for prefix, v1 in V1.items() if message_type.startswith(prefix))


def test_the_schemas_have_version_1s_fields() -> None:
    for model, own, data_field, data_fields in V1.values():
        assert list(model.model_fields) == [*ENVELOPE, *own]
        data_model = model.model_fields[data_field].annotation
        assert isinstance(data_model, type) and list(data_model.model_fields) == data_fields


class BookingReadWithSeats(BookingRead):
    seat_map: str  # a field the API might gain


def a_rendered_booking() -> dict[str, Any]:
    now = datetime.now(UTC)
    row = dict.fromkeys(BOOKING_DATA) | {
        "id": 1, "user_id": 7, "event_id": 42, "booking_reference": "BK-JEJHZGN04A", "quantity": 2,
        "total_amount": Decimal("99.8"), "currency": "EUR", "status": "pending", "payment_status": "pending",
        "booking_date": now, "expires_at": now, "version": 1, "created_at": now, "updated_at": now,
        "is_active": True, "is_expired": False,
    }  # fmt: skip
    return BookingRead.model_validate(row).model_dump(mode="json")


def test_the_batch_message_is_version_1_made_of_the_batchs_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    rendered = a_rendered_booking()
    assert outbox.BOOKING_READ_IS_V1  # today the API's booking renders as version 1: no copy per booking
    as_is = outbox.booking_message_of("BookingCreated", rendered, now)["booking_data"]
    monkeypatch.setattr(outbox, "BOOKING_READ_IS_V1", False)
    rebuilt = outbox.booking_message_of("BookingCreated", rendered, now)["booking_data"]
    assert as_is == rebuilt and list(rebuilt) == BOOKING_DATA


def test_a_field_the_api_adds_stays_out_of_the_batch_message(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not outbox._renders_as(BookingReadWithSeats, BookingDataV1)
    monkeypatch.setattr(outbox, "BOOKING_READ_IS_V1", False)
    rendered = a_rendered_booking() | {"seat_map": "A1"}
    message = outbox.booking_message_of("BookingCreated", rendered, datetime.now(UTC))
    assert list(message["booking_data"]) == BOOKING_DATA


async def test_every_message_written_has_exactly_version_1s_fields(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=2)
    await api.create_event(2, capacity=5)
    booked = (await api.book(5, 1, 2)).json()  # the batch
    joined = await api.client.post("/api/v1/waitlist/", json={"event_id": 1, "quantity": 1}, headers=api.headers(6))
    assert joined.status_code == 201, joined.text
    cancelled = await api.client.put(f"/api/v1/bookings/{booked['id']}/cancel", headers=api.headers(5))
    assert cancelled.status_code == 200, cancelled.text  # frees seats: the waitlist's offer
    reserved = await api.client.post("/api/v1/availability/2/reserve", json={"quantity": 1}, headers=api.headers(7))
    hold = reserved.json()
    assert (await api.book(7, 2, 1, reservation_id=hold["id"])).status_code == 201  # one booking at a time
    await db.rollback()
    messages: list[dict[str, Any]] = list((await db.execute(text("SELECT payload FROM outbox ORDER BY id"))).scalars())
    types = {m["type"] for m in messages}
    assert {"BookingCreated", "BookingCancelled", "WaitlistJoined", "WaitlistNotified", "AvailabilityChanged"} <= types
    for message in messages:
        model, own, data_field, data_fields = schema_of(message["type"])
        model.model_validate(message)
        # jsonb keeps no key order: the names, in any order
        assert sorted(message) == sorted([*ENVELOPE, *own]), message["type"]
        assert sorted(message[data_field]) == sorted(data_fields), message["type"]
        assert message["schema_version"] == 1
