"""Edge input the schema must refuse for its sender only, and what the routing answers at its edges."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.checks import count
from tests.conftest import Api, make_settings, running_app

JSON = {"content-type": "application/json"}


def _raw(body: dict[str, Any]) -> bytes:
    """JSON as a client may send it: `json.dumps` writes an unpaired surrogate as the escape `\\ud800`."""
    return json.dumps(body).encode()


def _is_validation_error(response: Any) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("field", ["notes", "payment_method"])
@pytest.mark.parametrize("surrogate", ["\ud800", "ok \udfff", "\udbff\udbff"])
async def test_unpaired_surrogates_are_refused_for_their_sender_only(
    api: Api, db: AsyncConnection, field: str, surrogate: str
) -> None:
    await api.create_event(1, capacity=20)
    poisoned = _raw({"event_id": 1, "quantity": 1, field: surrogate})
    headers = {**api.headers(5), **JSON}
    responses = await asyncio.gather(
        api.client.post("/api/v1/bookings/", content=poisoned, headers=headers),
        *(api.book(user, 1, 1, notes="fine", payment_method="card") for user in range(6, 16)),
    )
    _is_validation_error(responses[0])
    assert [r.status_code for r in responses[1:]] == [201] * 10
    assert await count(db, "bookings") == 10


async def test_unpaired_surrogates_in_every_free_text_field(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    booking = (await api.book(5, 1)).json()
    admin = {**api.admin(), **JSON}
    user = {**api.headers(5), **JSON}
    event = {"event_name": "Bad \ud800", "total_capacity": 5, "price": "1.00", "currency": "USD"}
    sent = [
        api.client.put("/api/v1/admin/availability/2", content=_raw(event), headers=admin),
        api.client.put("/api/v1/admin/waitlist/1", content=_raw({"reason": "\ud800"}), headers=admin),
        api.client.put(
            f"/api/v1/admin/bookings/{booking['id']}/confirm", content=_raw({"note": "\ud800"}), headers=admin
        ),
        api.client.put(
            f"/api/v1/admin/bookings/{booking['id']}/refund", content=_raw({"reason": "\ud800"}), headers=admin
        ),
        api.client.post(
            f"/api/v1/bookings/{booking['id']}/payment", content=_raw({"payment_method": "\ud800"}), headers=user
        ),
    ]
    for response in await asyncio.gather(*sent):
        _is_validation_error(response)
    assert await count(db, "event_availability") == 1
    assert (await api.client.get(f"/api/v1/bookings/{booking['id']}", headers=api.headers(5))).json()["status"] == (
        "pending"
    )


async def test_surrogate_keys_and_valid_pairs(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    headers = {**api.headers(5), **JSON}
    odd_key = await api.client.post("/api/v1/bookings/", content=_raw({"\ud800": 1, "event_id": 1}), headers=headers)
    _is_validation_error(odd_key)
    paired = await api.client.post(  # a surrogate pair is a real character (U+1F39F)
        "/api/v1/bookings/", content=b'{"event_id": 1, "quantity": 1, "notes": "\\ud83c\\udf9f"}', headers=headers
    )
    assert paired.status_code == 201 and paired.json()["notes"] == "\U0001f39f"


@pytest.mark.parametrize("quantity", [True, "1", 1.0, 1.5, "one", None])
async def test_quantity_must_be_a_json_integer(api: Api, db: AsyncConnection, quantity: object) -> None:
    await api.create_event(1, capacity=5)
    for url, body in (
        ("/api/v1/bookings/", {"event_id": 1, "quantity": quantity}),
        ("/api/v1/availability/1/reserve", {"quantity": quantity}),
        ("/api/v1/waitlist/", {"event_id": 1, "quantity": quantity}),
    ):
        _is_validation_error(await api.client.post(url, json=body, headers=api.headers(5)))
    _is_validation_error(
        await api.client.post("/api/v1/bookings/", json={"event_id": "1", "quantity": 1}, headers=api.headers(5))
    )
    assert await count(db, "bookings") == 0 and await count(db, "reservations") == 0


async def test_admin_integers_are_strict(api: Api) -> None:
    body = {"event_name": "E", "total_capacity": "5", "price": "1.00", "currency": "USD"}
    _is_validation_error(await api.client.put("/api/v1/admin/availability/1", json=body, headers=api.admin()))
    _is_validation_error(await api.client.put("/api/v1/admin/waitlist/1", json={"priority": True}, headers=api.admin()))
    nothing = await api.client.put("/api/v1/admin/waitlist/1", json={"reason": "no change"}, headers=api.admin())
    _is_validation_error(nothing)  # documented in the schema: a priority or remove=true
    for starts_at in (1700000000, "1700000000", 0.5):
        timed = {**body, "total_capacity": 5, "starts_at": starts_at}
        _is_validation_error(await api.client.put("/api/v1/admin/availability/1", json=timed, headers=api.admin()))


@pytest.mark.parametrize("value", ["0.5", "0", "1700000000", "-1", "1e9", "now"])
async def test_time_filters_take_iso_8601_only(api: Api, value: str) -> None:
    for url, name in (
        ("/api/v1/admin/bookings/", "created_from"),
        ("/api/v1/admin/bookings/", "created_to"),
        ("/api/v1/admin/audit/", "since"),
        ("/api/v1/admin/audit/", "until"),
    ):
        response = await api.client.get(url, params={name: value}, headers=api.admin())
        _is_validation_error(response)


async def test_time_filters_still_take_iso_8601(api: Api) -> None:
    await api.create_event(1, capacity=5)
    await api.book(5, 1)
    for value, total in (("2000-01-01T00:00:00Z", 1), ("2000-01-01T00:00:00+02:00", 1), ("2999-01-01", 1)):
        found = await api.client.get("/api/v1/admin/bookings/", params={"created_to": value}, headers=api.admin())
        assert found.status_code == 200, found.text
        assert found.json()["total"] == (0 if value.startswith("2000") else total)
        audit = await api.client.get("/api/v1/admin/audit/", params={"since": value}, headers=api.admin())
        assert audit.status_code == 200, audit.text


async def test_openapi_documents_the_ticket_limit_of_the_settings(database_url: str, redis_url: str) -> None:
    async with running_app(make_settings(database_url, redis_url, max_tickets_per_booking=7)) as api:
        schemas = (await api.client.get("/openapi.json")).json()["components"]["schemas"]
    for name in ("BookingCreate", "ReserveRequest", "WaitlistJoin"):
        quantity = schemas[name]["properties"]["quantity"]
        assert quantity["minimum"] == 1 and quantity["maximum"] == 7, name


async def test_405_lists_every_method_of_the_path(api: Api) -> None:
    for path, allowed in (
        ("/api/v1/bookings/", {"GET", "POST"}),
        ("/api/v1/waitlist/", {"GET", "POST"}),
        ("/api/v1/bookings/1", {"GET"}),
        ("/api/v1/bookings/1/cancel", {"PUT"}),
    ):
        response = await api.client.request("PATCH", path, headers=api.headers(5))
        assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
        assert set(response.headers["Allow"].split(", ")) == allowed, path


async def test_trailing_slash_redirect_is_relative(api: Api) -> None:
    headers = {**api.headers(5), "Host": "evil.example"}
    response = await api.client.get("/api/v1/bookings?limit=5", headers=headers)
    assert response.status_code == 307
    assert response.headers["Location"] == "/api/v1/bookings/?limit=5"
    followed = await api.client.get(response.headers["Location"], headers=api.headers(5))
    assert followed.status_code == 200
    back = await api.client.get("/api/v1/bookings/1/", headers=headers)
    assert back.status_code == 307 and back.headers["Location"] == "/api/v1/bookings/1"
    assert (await api.client.get("/no/such/route/", headers=headers)).status_code == 404
