"""One request's bad data fails only that request, never the others sharing its batch."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.errors import AppError
from app.schemas.booking import BookingRead
from tests.checks import assert_invariant, count
from tests.conftest import Api
from tests.support import UNPAIRED_SURROGATE, request_for

TOP_PRICE = "9999999999.99"  # the most a price may be: two seats of it cannot be stored as an amount


async def booked_ids(db: AsyncConnection, table: str, column: str, where: str = "true") -> set[int]:
    await db.rollback()
    rows = await db.execute(text(f"SELECT {column} FROM {table} WHERE {where}"))
    return {int(value) for value in rows.scalars()}


async def assert_recorded(db: AsyncConnection, booking_ids: set[int]) -> None:
    """Exactly these bookings exist, each with its audit row and its outbox message."""
    assert await booked_ids(db, "bookings", "id") == booking_ids
    audited = await booked_ids(db, "audit_log", "entity_id", "action = 'booking.created'")
    assert audited == booking_ids
    announced = await booked_ids(db, "outbox", "(payload->>'booking_id')::bigint", "kind = 'created'")
    assert announced == booking_ids
    await assert_invariant(db)


async def test_a_surrogate_in_one_request_fails_only_that_request(api: Api, db: AsyncConnection) -> None:
    """Submitted to the batcher directly (past any edge validation), all in one batch."""
    await api.create_event(1, capacity=50)
    requests = [request_for(100 + n, 1) for n in range(15)]
    requests.insert(7, request_for(99, 1, notes=UNPAIRED_SURROGATE))
    outcomes = await asyncio.gather(*(api.runtime.batcher.submit(r) for r in requests), return_exceptions=True)

    poisoned = outcomes.pop(7)
    assert isinstance(poisoned, AppError) and poisoned.status_code == 422 and poisoned.code == "invalid_value"
    assert all(isinstance(outcome, BookingRead) for outcome in outcomes), outcomes
    bookings = [outcome for outcome in outcomes if isinstance(outcome, BookingRead)]
    assert [b.user_id for b in bookings] == [100 + n for n in range(15)]
    await assert_recorded(db, {b.id for b in bookings})
    assert (await api.availability(1))["available_capacity"] == 35


async def test_several_bad_requests_in_one_batch_fail_alone(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=50)
    requests = [request_for(100 + n, 1, notes=UNPAIRED_SURROGATE if n % 10 == 0 else None) for n in range(20)]
    for n in (5, 15):
        requests[n].payment_method = "card" + UNPAIRED_SURROGATE
    outcomes = await asyncio.gather(*(api.runtime.batcher.submit(r) for r in requests), return_exceptions=True)

    for n, outcome in enumerate(outcomes):
        if n % 5 == 0:
            assert isinstance(outcome, AppError) and outcome.code == "invalid_value"
        else:
            assert isinstance(outcome, BookingRead) and outcome.user_id == 100 + n
    await assert_recorded(db, {o.id for o in outcomes if isinstance(o, BookingRead)})
    assert (await api.availability(1))["available_capacity"] == 34


async def test_an_amount_too_large_to_store_is_refused_before_the_batch(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=50, price=TOP_PRICE)
    await api.create_event(2, capacity=50)
    requests = [request_for(100 + n, 2) for n in range(15)]
    requests.insert(3, request_for(99, 1, quantity=2))
    requests.append(request_for(98, 1, quantity=1))  # one seat of it fits
    outcomes = await asyncio.gather(*(api.runtime.batcher.submit(r) for r in requests), return_exceptions=True)

    refused = outcomes.pop(3)
    assert isinstance(refused, AppError) and refused.status_code == 422 and refused.code == "amount_out_of_range"
    bookings = [outcome for outcome in outcomes if isinstance(outcome, BookingRead)]
    assert len(bookings) == 16
    assert bookings[-1].total_amount == Decimal(TOP_PRICE)
    await assert_recorded(db, {b.id for b in bookings})
    assert (await api.availability(1))["available_capacity"] == 49


async def test_an_amount_too_large_to_store_is_422_over_http(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=50, price=TOP_PRICE)
    response = await api.book(5, 1, 2)
    assert response.status_code == 422 and response.json()["code"] == "amount_out_of_range"
    assert response.json()["detail"].startswith("2 seats at 9999999999.99 USD")
    assert await count(db, "bookings") == 0
    assert (await api.availability(1))["available_capacity"] == 50
    assert (await api.book(5, 1, 1)).status_code == 201


def poisoned_body(poison: str) -> dict[str, Any]:
    if poison == "surrogate":
        return {"event_id": 1, "quantity": 1, "notes": UNPAIRED_SURROGATE}
    return {"event_id": 2, "quantity": 2}


@pytest.mark.parametrize("poison", ["surrogate", "amount"])
async def test_concurrent_users_are_all_booked_beside_a_poisoned_request(
    api: Api, db: AsyncConnection, poison: str
) -> None:
    await api.create_event(1, capacity=100)
    await api.create_event(2, capacity=100, price=TOP_PRICE)

    async def post(user_id: int, body: dict[str, Any]) -> httpx.Response:
        # Escaped as JSON allows (`\ud800`): httpx's own encoder would refuse the surrogate.
        content = json.dumps(body).encode()
        headers = api.headers(user_id, **{"content-type": "application/json"})
        return await api.client.post("/api/v1/bookings/", content=content, headers=headers)

    # The poisoned request comes last, so it shares a batch with the others queued behind the first.
    sends = [post(100 + n, {"event_id": 1, "quantity": 1}) for n in range(15)]
    responses = await asyncio.gather(*sends, post(99, poisoned_body(poison)))

    poisoned = responses[-1]
    assert poisoned.status_code == 422, poisoned.text
    if poison == "amount":
        assert poisoned.json()["code"] == "amount_out_of_range"
    assert [r.status_code for r in responses[:-1]] == [201] * 15, [r.text for r in responses[:-1]]
    await assert_recorded(db, {r.json()["id"] for r in responses[:-1]})
    assert await count(db, "bookings", "user_id = 99") == 0


async def test_each_batched_booking_is_audited_with_its_own_request_id(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=100)

    async def book(n: int) -> httpx.Response:
        headers = api.headers(100 + n, **{"X-Request-ID": f"req-{n:02d}"})
        return await api.client.post("/api/v1/bookings/", json={"event_id": 1, "quantity": 1}, headers=headers)

    responses = await asyncio.gather(*(book(n) for n in range(30)))
    assert [r.status_code for r in responses] == [201] * 30
    await db.rollback()
    rows = await db.execute(
        text("SELECT entity_id, request_id FROM audit_log WHERE action = 'booking.created' AND entity_type = 'booking'")
    )
    recorded = dict(rows.all())
    expected = {r.json()["id"]: r.headers["X-Request-ID"] for r in responses}
    assert expected == {r.json()["id"]: f"req-{r.json()['user_id'] - 100:02d}" for r in responses}
    assert recorded == expected
