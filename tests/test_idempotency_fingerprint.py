"""The Idempotency-Key fingerprint takes any body: never a 500, however deep or odd it is."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from app.services.idempotency import request_fingerprint
from tests.checks import count
from tests.conftest import Api

NESTED = b"[" * 30_000 + b"]" * 30_000


@pytest.mark.parametrize(
    ("path", "content_type", "status", "code"),
    [
        ("/api/v1/bookings/", "text/plain", 422, "validation_error"),
        ("/api/v1/bookings/{booking}/payment", "text/plain", 422, "validation_error"),
        # No body is read for this route: the id (a booking's, not a waitlist entry's) is unknown.
        ("/api/v1/waitlist/{booking}/book", "text/plain", 404, "not_found"),
        ("/api/v1/waitlist/{booking}/book", "application/json", 404, "not_found"),
        ("/api/v1/waitlist/{booking}/book", "application/octet-stream", 404, "not_found"),
    ],
)
async def test_deeply_nested_body_with_an_idempotency_key_is_4xx(
    api: Api, db: AsyncConnection, path: str, content_type: str, status: int, code: str
) -> None:
    await api.create_event(1, capacity=5)
    booking = (await api.book(5, 1)).json()
    headers = api.headers(5, **{"Idempotency-Key": "deep-1", "content-type": content_type})
    response = await api.client.post(path.format(booking=booking["id"]), content=NESTED, headers=headers)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await count(db, "bookings") == 1


def test_deep_or_odd_bodies_have_distinct_fingerprints() -> None:
    bodies = [NESTED, NESTED + b" ", b"\xff", b"\xfe", b"\xff\xfe", b'{"a": "\\ud800"}', b"[" * 300 + b"]" * 300]
    fingerprints = {request_fingerprint("POST", "/x", body) for body in bodies}
    assert len(fingerprints) == len(bodies)


def test_the_same_json_in_another_layout_has_the_same_fingerprint() -> None:
    first = request_fingerprint("POST", "/x", b'{"event_id": 1, "quantity": 2}')
    assert first == request_fingerprint("POST", "/x", b'{"quantity":2,\n "event_id":1}')
    assert first != request_fingerprint("POST", "/x", b'{"quantity": 3, "event_id": 1}')
    assert first != request_fingerprint("POST", "/y", b'{"event_id": 1, "quantity": 2}')
