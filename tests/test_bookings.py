"""Bookings and holds through the API, against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from redis.asyncio.lock import Lock
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import clock
from app.core.config import Settings
from app.services import sweeper
from tests.checks import assert_invariant, count
from tests.conftest import Api, running_app


async def test_booking_takes_seats_and_is_audited(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=10, price="49.90")
    response = await api.book(user_id=5, event_id=1, quantity=3, payment_method="card")
    assert response.status_code == 201
    booking = response.json()
    assert booking["status"] == "pending" and booking["payment_status"] == "pending"
    assert booking["total_amount"] == "149.70" and booking["currency"] == "USD"
    assert booking["booking_reference"].startswith("BK-") and len(booking["booking_reference"]) == 13
    assert booking["is_active"] is True and booking["is_expired"] is False
    figures = await api.availability(1)
    assert (figures["available_capacity"], figures["reserved_capacity"]) == (7, 3)
    assert await count(db, "audit_log", "action = 'booking.created'") == 1
    assert await count(db, "outbox", "kind = 'created'") == 1
    await assert_invariant(db)


async def test_not_enough_seats_says_how_many(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=2)
    response = await api.book(5, 1, quantity=3)
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "insufficient_capacity" and body["available"] == 2
    assert await count(db, "bookings") == 0


async def test_unknown_event_is_404(api: Api, db: AsyncConnection) -> None:
    response = await api.book(5, 777, quantity=1)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert await count(db, "bookings") == 0


async def test_race_for_the_last_seats_sells_exactly_capacity(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=50)
    responses = await asyncio.gather(*(api.book(user, 1) for user in range(100, 300)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 50 and statuses.count(409) == 150
    assert await count(db, "bookings") == 50
    figures = await api.availability(1)
    assert (figures["available_capacity"], figures["reserved_capacity"]) == (0, 50)
    await assert_invariant(db)


async def test_race_with_random_quantities_never_oversells(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=50)
    rng = random.Random(7)
    quantities = [rng.randint(1, 4) for _ in range(200)]
    responses = await asyncio.gather(*(api.book(100 + i, 1, q) for i, q in enumerate(quantities)))
    sold = sum(q for q, r in zip(quantities, responses, strict=True) if r.status_code == 201)
    assert {r.status_code for r in responses} <= {201, 409}
    assert sold <= 50
    assert (await api.availability(1))["reserved_capacity"] == sold
    # Whatever is left is smaller than every request that was refused.
    refused = [q for q, r in zip(quantities, responses, strict=True) if r.status_code == 409]
    assert all(q > 50 - sold for q in refused)
    await assert_invariant(db)


async def test_cancel_returns_seats_and_second_cancel_conflicts(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    booking = (await api.book(5, 1, 2)).json()
    cancelled = await api.client.put(f"/api/v1/bookings/{booking['id']}/cancel", headers=api.headers(5))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await api.availability(1))["available_capacity"] == 5
    again = await api.client.put(f"/api/v1/bookings/{booking['id']}/cancel", headers=api.headers(5))
    assert again.status_code == 409 and again.json()["code"] == "booking_not_cancellable"
    await assert_invariant(db)


async def test_pending_booking_expires_and_seats_return(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    booking = (await api.book(5, 1, 2)).json()
    clock.advance(timedelta(minutes=api.settings.booking_timeout_minutes, seconds=1))
    # Expiry on read: the figures never show the lapsed hold as live.
    assert (await api.availability(1))["available_capacity"] == 5
    status = await api.client.get(f"/api/v1/bookings/{booking['id']}/status", headers=api.headers(5))
    assert status.json()["status"] == "expired"
    assert await count(db, "outbox", "kind = 'expired'") == 1
    await assert_invariant(db)


async def test_lists_expire_lapsed_bookings_before_they_answer(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    await api.book(5, 1, 2)
    clock.advance(timedelta(minutes=api.settings.booking_timeout_minutes, seconds=1))
    await api.book(5, 1, 1)  # still pending, not lapsed
    # No sweep and no other read in between.
    pending = await api.client.get("/api/v1/bookings/", params={"status": "pending"}, headers=api.headers(5))
    assert [b["quantity"] for b in pending.json()["items"]] == [1]
    expired = await api.client.get("/api/v1/bookings/", params={"status": "expired"}, headers=api.headers(5))
    assert [(b["quantity"], b["is_active"]) for b in expired.json()["items"]] == [(2, False)]
    assert (await api.availability(1))["available_capacity"] == 4
    await api.book(6, 1, 1)
    clock.advance(timedelta(minutes=api.settings.booking_timeout_minutes, seconds=1))
    everyone = await api.client.get("/api/v1/admin/bookings/", params={"status": "pending"}, headers=api.admin())
    assert everyone.json()["total"] == 0
    assert await count(db, "bookings", "status = 'expired'") == 3
    await assert_invariant(db)


async def test_sweeper_expires_due_bookings(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    await api.book(5, 1, 2)
    await api.book(6, 1, 1)
    clock.advance(timedelta(minutes=api.settings.booking_timeout_minutes, seconds=1))
    assert await sweeper.sweep_once(api.runtime) == 2
    assert await count(db, "bookings", "status = 'expired'") == 2
    assert await count(db, "audit_log", "action = 'booking.expired' AND actor_type = 'system'") == 2
    await assert_invariant(db)


async def test_reserve_then_book_takes_over_the_hold(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=3)
    hold = await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 2}, headers=api.headers(5))
    assert hold.status_code == 201
    assert {"id", "expires_at"} <= hold.json().keys()
    # The held seats are not for anyone else.
    assert (await api.book(6, 1, 2)).status_code == 409
    booking = await api.book(5, 1, 2, reservation_id=hold.json()["id"])
    assert booking.status_code == 201, booking.text
    figures = await api.availability(1)
    assert (figures["available_capacity"], figures["reserved_capacity"]) == (1, 2)
    assert await count(db, "reservations", "status = 'converted'") == 1
    await assert_invariant(db)


async def test_release_returns_seats(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=3)
    hold = (
        await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 2}, headers=api.headers(5))
    ).json()
    released = await api.client.delete(
        "/api/v1/availability/1/release", params={"reservation_id": hold["id"]}, headers=api.headers(5)
    )
    assert released.status_code == 200 and released.json()["status"] == "released"
    assert (await api.availability(1))["available_capacity"] == 3
    await assert_invariant(db)


async def test_seats_of_lapsed_holds_go_to_the_next_bookings_at_once(api: Api, db: AsyncConnection) -> None:
    for event_id in (1, 2, 3):
        await api.create_event(event_id, capacity=2)
    for event_id in (1, 2):
        hold = await api.client.post(
            f"/api/v1/availability/{event_id}/reserve", json={"quantity": 2}, headers=api.headers(5)
        )
        assert hold.status_code == 201
    assert (await api.book(6, 3, 2)).status_code == 201  # event 3: sold, no hold to lapse
    clock.advance(timedelta(minutes=api.settings.reservation_timeout_minutes, seconds=1))
    # No read or sweep in between: refused for capacity, the batch expires the lapsed holds of all
    # its refused events in one go and looks again.
    answers = await asyncio.gather(api.book(7, 1, 2), api.book(8, 2, 2), api.book(9, 3, 1))
    assert [a.status_code for a in answers] == [201, 201, 409]
    assert await count(db, "reservations", "status = 'expired'") == 2
    await assert_invariant(db)


async def test_booking_on_an_expired_hold_is_refused(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=3)
    hold = (
        await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 2}, headers=api.headers(5))
    ).json()
    clock.advance(timedelta(minutes=api.settings.reservation_timeout_minutes, seconds=1))
    response = await api.book(5, 1, 2, reservation_id=hold["id"])
    assert response.status_code == 409, response.text
    assert await count(db, "bookings") == 0
    assert await count(db, "reservations", "status = 'converted'") == 0
    assert await count(db, "audit_log", "action IN ('booking.created', 'reservation.converted')") == 0
    assert await count(db, "outbox", "kind = 'created'") == 0
    assert (await api.availability(1))["available_capacity"] == 3
    await assert_invariant(db)
    assert response.json()["code"] == "reservation_not_active"


async def test_own_bookings_listed_newest_first_with_filters(api: Api) -> None:
    await api.create_event(1, capacity=10)
    await api.create_event(2, capacity=10)
    first = (await api.book(5, 1)).json()
    second = (await api.book(5, 2)).json()
    await api.book(6, 1)
    page = (await api.client.get("/api/v1/bookings/", headers=api.headers(5))).json()
    assert [b["id"] for b in page["items"]] == [second["id"], first["id"]]
    assert (page["total"], page["limit"], page["offset"]) == (2, 20, 0)
    only_event_1 = await api.client.get("/api/v1/bookings/", params={"event_id": 1}, headers=api.headers(5))
    assert [b["id"] for b in only_event_1.json()["items"]] == [first["id"]]
    pending = await api.client.get("/api/v1/bookings/", params={"status": "cancelled"}, headers=api.headers(5))
    assert pending.json()["total"] == 0


async def test_booking_a_hold_does_not_queue_behind_the_event(settings: Settings, db: AsyncConnection) -> None:
    """Its seats are already reserved: no counter moves, so no event lock. While another instance holds
    the event (a rush of holds and bookings), buyers can still turn their holds into bookings."""
    async with running_app(settings.model_copy(update={"lock_wait_seconds": 0.2})) as api:
        await api.create_event(1, capacity=10)
        hold = await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 2}, headers=api.headers(5))
        elsewhere = Lock(api.runtime.redis.client, api.runtime.redis.key("lock", "event", 1), timeout=60)
        assert await elsewhere.acquire(blocking=False)
        try:
            booked = await api.book(5, 1, 2, reservation_id=hold.json()["id"])
        finally:
            await elsewhere.release()
        assert booked.status_code == 201, booked.text
        assert (await api.availability(1))["reserved_capacity"] == 2
    assert await count(db, "reservations", "status = 'converted'") == 1
    await assert_invariant(db)
