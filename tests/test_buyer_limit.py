"""The per-buyer ticket limit: what counts, what frees it, and that it holds under a race."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import clock
from app.core.config import Settings
from tests.checks import assert_invariant, count
from tests.conftest import Api, make_settings, running_app
from tests.redis_server import free_port


async def limit(api: Api, event_id: int, capacity: int, per_user: Any) -> httpx.Response:
    body = {"event_name": "Gig", "total_capacity": capacity, "price": "10.00", "max_tickets_per_user": per_user}
    return await api.client.put(f"/api/v1/admin/availability/{event_id}", json=body, headers=api.admin())


async def hold(api: Api, user_id: int, event_id: int, quantity: int) -> httpx.Response:
    return await api.client.post(
        f"/api/v1/availability/{event_id}/reserve", json={"quantity": quantity}, headers=api.headers(user_id)
    )


def refused_for_limit(response: httpx.Response, per_user: int, held: int) -> bool:
    body = response.json()
    return (
        response.status_code == 409
        and body["code"] == "ticket_limit_exceeded"
        and (body["limit"], body["held"]) == (per_user, held)
    )


async def test_the_limit_is_set_validated_and_shown(api: Api) -> None:
    assert (await limit(api, 1, 100, 4)).status_code == 200
    assert (await api.availability(1))["max_tickets_per_user"] == 4
    for bad in (0, 10_001, "4", 2.5, True):
        assert (await limit(api, 1, 100, bad)).status_code == 422, bad
    assert (await limit(api, 1, 100, None)).status_code == 200
    assert (await api.availability(1))["max_tickets_per_user"] is None


async def test_holds_bookings_and_offers_count_once(api: Api, db: AsyncConnection) -> None:
    await limit(api, 1, 100, 4)
    held = await hold(api, 7, 1, 2)
    assert held.status_code == 201
    assert (await api.book(7, 1, quantity=2)).status_code == 201
    assert refused_for_limit(await api.book(7, 1), 4, 4)
    assert refused_for_limit(await hold(api, 7, 1, 1), 4, 4)
    converted = await api.book(7, 1, quantity=2, reservation_id=held.json()["id"])
    assert converted.status_code == 201, converted.text  # the hold's seats, not two more
    assert refused_for_limit(await api.book(7, 1), 4, 4)  # counted once: 4 held, not 6
    assert (await api.book(8, 1, quantity=4)).status_code == 201  # another buyer has their own allowance

    await limit(api, 2, 3, 4)
    assert (await api.book(9, 2, quantity=3)).status_code == 201
    join = {"event_id": 2, "quantity": 2}
    too_many = await api.client.post("/api/v1/waitlist/", json=join, headers=api.headers(9))
    assert refused_for_limit(too_many, 4, 3)
    assert await count(db, "waitlist_entries") == 0
    await assert_invariant(db)


async def test_seats_that_leave_free_the_allowance(api: Api) -> None:
    await limit(api, 1, 100, 2)
    first = await api.book(7, 1, quantity=2)
    cancelled = await api.client.put(f"/api/v1/bookings/{first.json()['id']}/cancel", headers=api.headers(7))
    assert cancelled.status_code == 200
    held = await hold(api, 7, 1, 2)
    released = await api.client.delete(
        f"/api/v1/availability/1/release?reservation_id={held.json()['id']}", headers=api.headers(7)
    )
    assert released.status_code == 200
    assert (await api.book(7, 1, quantity=2)).status_code == 201
    assert refused_for_limit(await api.book(7, 1), 2, 2)
    clock.advance(timedelta(minutes=16))  # the pending booking lapses, swept or not
    assert (await api.book(7, 1, quantity=2)).status_code == 201


async def test_booking_a_waitlist_offer_is_not_counted_twice(api: Api, db: AsyncConnection) -> None:
    await limit(api, 1, 2, 2)
    first = await api.book(7, 1, quantity=2)
    entry = await api.client.post("/api/v1/waitlist/", json={"event_id": 1, "quantity": 2}, headers=api.headers(8))
    assert entry.status_code == 201
    await api.client.put(f"/api/v1/bookings/{first.json()['id']}/cancel", headers=api.headers(7))
    booked = await api.client.post(f"/api/v1/waitlist/{entry.json()['id']}/book", headers=api.headers(8))
    assert booked.status_code == 201, booked.text
    await assert_invariant(db)


@pytest.mark.parametrize("redis", ["up", "unreachable"])
async def test_fifty_simultaneous_requests_of_one_buyer_on_two_instances(
    settings: Settings, database_url: str, db: AsyncConnection, redis: str
) -> None:
    if redis == "unreachable":  # no event locks: PostgreSQL alone keeps the limit
        settings = make_settings(database_url, f"redis://127.0.0.1:{free_port()}/0")
    async with running_app(settings) as first, running_app(settings) as second:
        await limit(first, 1, 500, 4)
        calls = [
            (first if n % 2 else second).book(7, 1) if n % 3 else hold(first if n % 2 else second, 7, 1, 1)
            for n in range(50)
        ]
        responses = await asyncio.gather(*calls)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] * 4 + [409] * 46
    assert all(r.json()["code"] == "ticket_limit_exceeded" for r in responses if r.status_code == 409)
    live = "user_id = 7 AND status IN ('pending', 'active')"
    assert await count(db, "bookings", live) + await count(db, "reservations", live) == 4
    await assert_invariant(db)


async def test_a_lower_limit_applies_to_new_requests_only(api: Api, db: AsyncConnection) -> None:
    await limit(api, 1, 100, 5)
    for _ in range(3):
        assert (await api.book(7, 1)).status_code == 201
    await limit(api, 1, 100, 2)
    assert await count(db, "bookings", "user_id = 7 AND status = 'pending'") == 3
    assert refused_for_limit(await api.book(7, 1), 2, 3)
    assert (await api.book(8, 1, quantity=2)).status_code == 201


async def test_an_offer_never_takes_a_buyer_past_the_limit(api: Api, db: AsyncConnection) -> None:
    """Joining is checked against the limit; seats bought after joining count when the offer comes."""
    await limit(api, 1, 5, 4)
    others = (await api.book(8, 1, quantity=4)).json()
    assert (await api.book(7, 1)).status_code == 201  # sold out now
    entry = await api.client.post("/api/v1/waitlist/", json={"event_id": 1, "quantity": 3}, headers=api.headers(7))
    assert entry.status_code == 201  # 1 held + 3 wanted = 4: allowed
    await limit(api, 1, 6, 4)  # one more seat: the entry (3) does not fit it, the buyer books it
    assert (await api.book(7, 1)).status_code == 201
    await api.client.put(f"/api/v1/bookings/{others['id']}/cancel", headers=api.headers(8))
    waiting = await count(db, "waitlist_entries", "user_id = 7 AND status = 'pending'")
    assert waiting == 1, "2 held + 3 offered would pass the limit of 4: the entry keeps waiting"
    assert (await api.availability(1))["available_capacity"] == 4
    await assert_invariant(db)
