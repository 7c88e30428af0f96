"""Hostile and odd input: it gets a clear 4xx (never a 500) and writes nothing it should not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings
from tests.checks import count
from tests.conftest import Api, make_settings, running_app

ODD_STRINGS = [
    "'; DROP TABLE bookings; --",
    '" OR 1=1 --',
    "Robert'); DELETE FROM event_availability WHERE ('1'='1",
    "Zoë 🎟️ 北京 עברית \u202e",
    "%s %d {0} ${jndi:ldap://x}",
]


async def test_oversized_body_is_413(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    body = {"event_id": 1, "quantity": 1, "notes": "x" * 200_000}
    response = await api.client.post("/api/v1/bookings/", json=body, headers=api.headers(5))
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert await count(db, "bookings") == 0


async def test_oversized_body_without_a_length_is_413(api: Api, db: AsyncConnection) -> None:
    """Sent chunked, the body has no Content-Length to refuse up front: it is cut off past the limit."""
    await api.create_event(1, capacity=5)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"event_id": 1, "quantity": 1, "notes": "'
        for _ in range(20):
            yield b"x" * 10_000
        yield b'"}'

    headers = {**api.headers(5), "content-type": "application/json"}
    response = await api.client.post("/api/v1/bookings/", content=chunks(), headers=headers)
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert await count(db, "bookings") == 0


async def test_deeply_nested_json_is_refused(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    nested = b'{"event_id": 1, "quantity": 1, "notes": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    headers = {**api.headers(5), "content-type": "application/json"}
    response = await api.client.post("/api/v1/bookings/", content=nested, headers=headers)
    assert (response.status_code, response.json()["code"]) == (400, "bad_request")
    assert await count(db, "bookings") == 0


@pytest.mark.parametrize(
    "params", [{"limit": 1_000_000}, {"limit": 0}, {"limit": -1}, {"offset": -5}, {"limit": "all"}]
)
async def test_bad_page_parameters_are_422(api: Api, params: dict[str, object]) -> None:
    for url in ("/api/v1/bookings/", "/api/v1/waitlist/"):
        response = await api.client.get(url, params=params, headers=api.headers(5))
        assert response.status_code == 422, (url, params)
    admin = await api.client.get("/api/v1/admin/bookings/", params=params, headers=api.admin())
    assert admin.status_code == 422


async def test_far_offset_is_an_empty_page(api: Api) -> None:
    response = await api.client.get("/api/v1/bookings/", params={"offset": 9_000_000}, headers=api.headers(5))
    assert response.status_code == 200 and response.json()["items"] == []


@pytest.mark.parametrize("text", ODD_STRINGS)
async def test_odd_strings_are_stored_verbatim(api: Api, db: AsyncConnection, text: str) -> None:
    await api.create_event(1, capacity=5, event_name=text[:255])
    assert (await api.availability(1))["event_name"] == text[:255]
    booking = await api.book(5, 1, 1, notes=text, payment_method=text[:32])
    assert booking.status_code == 201 and booking.json()["notes"] == text
    confirm = await api.client.put(
        f"/api/v1/admin/bookings/{booking.json()['id']}/confirm", json={"note": text}, headers=api.admin()
    )
    assert confirm.status_code == 200 and confirm.json()["notes"] == text
    listed = await api.client.get("/api/v1/admin/audit/", params={"action": text[:64]}, headers=api.admin())
    assert listed.status_code == 200 and listed.json()["total"] == 0
    assert await count(db, "event_availability") == 1 and await count(db, "bookings") == 1


async def test_odd_idempotency_keys_and_request_ids(api: Api) -> None:
    await api.create_event(1, capacity=5)
    for key in ("'; DROP TABLE idempotency_keys; --", "k" * 255):
        headers = api.headers(5, **{"Idempotency-Key": key, "X-Request-ID": "x" * 500})
        response = await api.client.post("/api/v1/bookings/", json={"event_id": 1, "quantity": 1}, headers=headers)
        assert response.status_code == 201
        assert len(response.headers["X-Request-ID"]) == 32  # an unusable id is replaced
    too_long = api.headers(5, **{"Idempotency-Key": "k" * 256})
    response = await api.client.post("/api/v1/bookings/", json={"event_id": 1, "quantity": 1}, headers=too_long)
    assert response.status_code == 422


async def test_wrong_content_type_is_4xx(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    headers = {**api.headers(5), "content-type": "text/plain"}
    response = await api.client.post("/api/v1/bookings/", content=b"event_id=1&quantity=1", headers=headers)
    assert (response.status_code, response.json()["code"]) == (422, "validation_error")
    assert await count(db, "bookings") == 0


async def test_rate_limit_on_writes(database_url: str, redis_url: str) -> None:
    settings: Settings = make_settings(database_url, redis_url, rate_limit_per_minute=3)
    async with running_app(settings) as api:
        await api.create_event(1, capacity=50)
        statuses = [(await api.book(5, 1)).status_code for _ in range(4)]
        assert statuses == [201, 201, 201, 429]
        limited = await api.book(5, 1)
        assert limited.json()["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
        assert (await api.client.get("/api/v1/bookings/", headers=api.headers(5))).status_code == 200
        assert (await api.book(6, 1)).status_code == 201  # another user has their own budget


async def test_nul_characters_are_refused_without_hurting_others(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    poisoned, fine = await asyncio.gather(api.book(5, 1, 1, notes="bad\x00note"), api.book(6, 1, 1, notes="fine"))
    assert poisoned.status_code == 422 and fine.status_code == 201
    in_filter = await api.client.get("/api/v1/admin/audit/", params={"action": "a\x00b"}, headers=api.admin())
    assert in_filter.status_code == 422 and in_filter.json()["code"] == "invalid_value"
    assert await count(db, "bookings") == 1
