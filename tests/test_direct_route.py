"""createBooking's DirectRoute (app/api/direct_route.py) answers every request the way FastAPI's own
handler of the same route does: the same status, body and headers, for refusals of every kind."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.deps import get_principal, limit_writes
from app.api.v1.bookings import CreateBookingRoute
from app.application import create_app
from app.core.config import Settings
from app.core.security import Role
from tests.checks import count
from tests.conftest import Api, running_app

JSON = "application/json"
GOOD = b'{"event_id": 1, "quantity": 1}'
# name -> (user id or a raw Authorization value or None, extra headers, content type, body)
Case = tuple[int | str | None, dict[str, str], str | None, bytes]
CASES: dict[str, Case] = {
    "no token": (None, {}, JSON, GOOD),
    "not a bearer token": ("Basic dXNlcjpwYXNz", {}, JSON, GOOD),
    "a forged token": ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoxfQ.c2lnbmF0dXJl", {}, JSON, GOOD),
    "broken JSON": (5, {}, JSON, b'{"event_id": 1,'),
    "broken JSON and no token": (None, {}, JSON, b"{"),
    "not UTF-8": (5, {}, JSON, b'{"event_id": "\xff\xfe"}'),
    "text/plain": (5, {}, "text/plain", GOOD),
    "no content type": (5, {}, None, GOOD),
    "a +json content type": (5, {}, "application/merged-patch+json; charset=utf-8", b'{"event_id": 1, "quantity": 0}'),
    "no body": (5, {}, JSON, b""),
    "a JSON array": (5, {}, JSON, b"[1, 2]"),
    "wrong types": (5, {}, JSON, b'{"event_id": "1", "quantity": 1.5, "notes": 7}'),
    "quantity 0": (5, {}, JSON, b'{"event_id": 1, "quantity": 0}'),
    "an unknown field": (5, {}, JSON, b'{"event_id": 424242, "quantity": 1, "seat": "A1"}'),
    "a long Idempotency-Key": (5, {"Idempotency-Key": "k" * 256}, JSON, GOOD),
    "a long admission token": (5, {"X-Admission-Token": "t" * 2049}, JSON, GOOD),
    "every error at once": (
        5,
        {"Idempotency-Key": "k" * 256, "X-Admission-Token": "t" * 2049},
        JSON,
        b'{"event_id": 0, "quantity": -1}',
    ),
    "too many tickets": (5, {}, JSON, b'{"event_id": 1, "quantity": 100000}'),
    "an event that does not exist": (5, {}, JSON, b'{"event_id": 424242, "quantity": 1}'),
    "a hold that does not exist": (5, {}, JSON, b'{"event_id": 1, "quantity": 1, "reservation_id": 9}'),
    "an admin": ("admin", {"Idempotency-Key": "k" * 256}, JSON, GOOD),
}


def _request(api: Api, case: Case) -> dict[str, Any]:
    who, extra, content_type, body = case
    headers = dict(extra)
    if isinstance(who, int):
        headers |= api.headers(who)
    elif who == "admin":
        headers |= api.headers(2, Role.ADMIN)
    elif who is not None:
        headers["Authorization"] = who
    if content_type is not None:
        headers["Content-Type"] = content_type
    return {"headers": headers, "content": body}


def _answer(response: httpx.Response) -> tuple[int, str | None, str | None, Any]:
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("www-authenticate"),
        response.json(),
    )


async def _answers(api: Api) -> dict[str, tuple[int, str | None, str | None, Any]]:
    return {
        name: _answer(await api.client.post("/api/v1/bookings/", **_request(api, case))) for name, case in CASES.items()
    }


@pytest.fixture
async def frameworks_answers(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The same requests answered by the app with createBooking on FastAPI's own handler."""
    with monkeypatch.context() as patched:
        patched.setattr(CreateBookingRoute, "get_route_handler", APIRoute.get_route_handler)
        async with running_app(settings) as plain:
            await plain.create_event(1, capacity=5)
            return await _answers(plain)


async def test_refusals_are_the_frameworks(api: Api, frameworks_answers: dict[str, Any], db: AsyncConnection) -> None:
    ours = await _answers(api)
    for name in CASES:
        assert ours[name] == frameworks_answers[name], name
    statuses = {name: answer[0] for name, answer in ours.items()}
    assert set(statuses.values()) <= {400, 401, 404, 422}, statuses
    assert await count(db, "bookings") == 0


async def test_the_route_is_direct(api: Api, settings: Settings) -> None:
    """The app serves createBooking through the DirectRoute (so the test above compares two handlers),
    and its router asks for no guard but the two the DirectRoute runs itself."""
    routes = [route for route in iter_route_contexts(create_app(settings).routes) if route.name == "create_booking"]
    assert [type(route.original_route) for route in routes] == [CreateBookingRoute]
    guards = {guard.dependency for guard in routes[0].dependencies}
    assert get_principal in guards and guards <= {get_principal, limit_writes}
    await api.create_event(1, capacity=5)
    response = await api.book(5, 1)
    assert response.status_code == 201 and response.headers["location"].endswith(f"/{response.json()['id']}")
