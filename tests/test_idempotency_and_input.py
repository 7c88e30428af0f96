"""Idempotent retries, ownership, and bad input that must write nothing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.checks import count
from tests.conftest import Api


async def test_retry_with_same_key_returns_first_answer(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    headers = api.headers(5, **{"Idempotency-Key": "order-1"})
    body = {"event_id": 1, "quantity": 2}
    first = await api.client.post("/api/v1/bookings/", json=body, headers=headers)
    second = await api.client.post("/api/v1/bookings/", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert await count(db, "bookings") == 1
    assert (await api.availability(1))["reserved_capacity"] == 2


async def test_same_key_with_another_body_is_422(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    headers = api.headers(5, **{"Idempotency-Key": "order-1"})
    await api.client.post("/api/v1/bookings/", json={"event_id": 1, "quantity": 2}, headers=headers)
    other = await api.client.post("/api/v1/bookings/", json={"event_id": 1, "quantity": 3}, headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert await count(db, "bookings") == 1


async def test_keys_belong_to_their_user(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    body = {"event_id": 1, "quantity": 1}
    for user in (5, 6):
        response = await api.client.post(
            "/api/v1/bookings/", json=body, headers=api.headers(user, **{"Idempotency-Key": "k"})
        )
        assert response.status_code == 201
    assert await count(db, "bookings") == 2


async def test_concurrent_duplicates_create_one_booking(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    headers = api.headers(5, **{"Idempotency-Key": "double-click"})
    body = {"event_id": 1, "quantity": 1}
    responses = await asyncio.gather(
        *(api.client.post("/api/v1/bookings/", json=body, headers=headers) for _ in range(5))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "idempotency_in_progress"
            assert response.headers["Retry-After"] == "1"
    assert await count(db, "bookings") == 1


async def test_refusal_is_replayed_too(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=1)
    headers = api.headers(5, **{"Idempotency-Key": "too-many"})
    body = {"event_id": 1, "quantity": 2}
    first = await api.client.post("/api/v1/bookings/", json=body, headers=headers)
    await api.create_event(1, capacity=5)
    second = await api.client.post("/api/v1/bookings/", json=body, headers=headers)
    assert first.status_code == second.status_code == 409
    assert first.json() == second.json() and second.headers["content-type"].startswith("application/problem+json")
    assert await count(db, "bookings") == 0


async def test_reserve_is_idempotent(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    headers = api.headers(5, **{"Idempotency-Key": "hold-1"})
    first = await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 2}, headers=headers)
    second = await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 2}, headers=headers)
    assert first.status_code == second.status_code == 201 and first.json() == second.json()
    assert await count(db, "reservations") == 1


async def test_another_users_booking_and_hold_are_404(api: Api) -> None:
    await api.create_event(1, capacity=5)
    booking = (await api.book(5, 1)).json()
    hold = (
        await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 1}, headers=api.headers(5))
    ).json()
    stranger = api.headers(6)
    for method, url in (
        ("GET", f"/api/v1/bookings/{booking['id']}"),
        ("GET", f"/api/v1/bookings/{booking['id']}/status"),
        ("PUT", f"/api/v1/bookings/{booking['id']}/cancel"),
        ("DELETE", f"/api/v1/availability/1/release?reservation_id={hold['id']}"),
    ):
        response = await api.client.request(method, url, headers=stranger)
        assert response.status_code == 404, (method, url, response.text)
    booked = await api.book(6, 1, 1, reservation_id=hold["id"])
    assert booked.status_code == 404


async def test_capacity_endpoint_is_admin_only(api: Api, db: AsyncConnection) -> None:
    body = {"event_name": "x", "total_capacity": 5, "price": "1.00", "currency": "USD"}
    response = await api.client.put("/api/v1/admin/availability/1", json=body, headers=api.headers(5))
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert await count(db, "event_availability") == 0


async def test_capacity_cannot_drop_below_seats_held(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    await api.book(5, 1, 3)
    body = {"event_name": "x", "total_capacity": 2, "price": "1.00", "currency": "USD"}
    response = await api.client.put("/api/v1/admin/availability/1", json=body, headers=api.admin())
    assert response.status_code == 409 and response.json()["code"] == "capacity_below_held"
    assert (await api.availability(1))["total_capacity"] == 5


@pytest.mark.parametrize(
    "body",
    [
        {"event_id": 1, "quantity": 0},
        {"event_id": 1, "quantity": -1},
        {"event_id": 1, "quantity": "two"},
        {"event_id": "x", "quantity": 1},
        {"event_id": 0, "quantity": 1},
        {"quantity": 1},
        {"event_id": 1, "quantity": 1, "reservation_id": -4},
        {"event_id": 1, "quantity": 1.5},
    ],
)
async def test_bad_booking_input_is_422_and_writes_nothing(
    api: Api, db: AsyncConnection, body: dict[str, object]
) -> None:
    await api.create_event(1, capacity=50)
    response = await api.client.post("/api/v1/bookings/", json=body, headers=api.headers(5))
    assert (response.status_code, response.json()["code"]) == (422, "validation_error")
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await count(db, "bookings") == 0
    assert await count(db, "audit_log", "entity_type = 'booking'") == 0


async def test_more_than_the_per_booking_maximum_is_400_and_writes_nothing(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=50)
    body = {"event_id": 1, "quantity": api.settings.max_tickets_per_booking + 1}
    response = await api.client.post("/api/v1/bookings/", json=body, headers=api.headers(5))
    assert (response.status_code, response.json()["code"]) == (400, "bad_request")
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await count(db, "bookings") == 0
    assert await count(db, "audit_log", "entity_type = 'booking'") == 0


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/bookings/abc",
        "/api/v1/bookings/0",
        "/api/v1/availability/-1",
        "/api/v1/bookings/99999999999999999999999",
    ],
)
async def test_malformed_ids_are_422(api: Api, url: str) -> None:
    response = await api.client.get(url, headers=api.headers(5))
    assert response.status_code == 422
    assert response.json()["errors"]


async def test_malformed_json_is_422(api: Api, db: AsyncConnection) -> None:
    headers = {**api.headers(5), "content-type": "application/json"}
    response = await api.client.post("/api/v1/bookings/", content=b"{not json", headers=headers)
    assert response.status_code == 422
    assert await count(db, "bookings") == 0


async def test_reserve_validates_quantity(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=50)
    for quantity, status, code in (
        (0, 422, "validation_error"),
        (11, 400, "bad_request"),
        ("many", 422, "validation_error"),
    ):
        response = await api.client.post(
            "/api/v1/availability/1/reserve", json={"quantity": quantity}, headers=api.headers(5)
        )
        assert (response.status_code, response.json()["code"]) == (status, code), quantity
    assert await count(db, "reservations") == 0
