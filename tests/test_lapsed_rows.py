"""A lapsed row met by a request, before the sweeper gets to it, is handled one way in every domain:
its expiry is committed (seats back, audited, announced), then the request is refused with its
entity's own code. Each check reads the rows themselves, not through the API (which expires on read)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import clock
from tests.checks import assert_invariant, count
from tests.conftest import Api


async def row(db: AsyncConnection, table: str, row_id: int) -> dict[str, Any]:
    await db.rollback()
    found = (await db.execute(text(f"SELECT * FROM {table} WHERE id = :id"), {"id": row_id})).mappings().one()
    return dict(found)


async def available(db: AsyncConnection, event_id: int = 1) -> int:
    await db.rollback()
    query = text("SELECT available_capacity FROM event_availability WHERE event_id = :id")
    return int((await db.execute(query, {"id": event_id})).scalar_one())


async def hold(api: Api, user: int, quantity: int) -> dict[str, Any]:
    response = await api.client.post(
        "/api/v1/availability/1/reserve", json={"quantity": quantity}, headers=api.headers(user)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def lapse_holds(api: Api) -> None:
    clock.advance(timedelta(minutes=api.settings.reservation_timeout_minutes, seconds=1))


async def assert_expired(db: AsyncConnection, table: str, row_id: int, action: str) -> None:
    assert (await row(db, table, row_id))["status"] == "expired"
    assert await count(db, "audit_log", f"action = '{action}' AND entity_id = {row_id}") == 1
    await assert_invariant(db)


async def test_releasing_a_lapsed_hold_commits_its_expiry_then_refuses(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=3)
    held = await hold(api, 5, 2)
    lapse_holds(api)
    release = "/api/v1/availability/1/release"
    response = await api.client.delete(release, params={"reservation_id": held["id"]}, headers=api.headers(5))
    assert response.status_code == 409 and response.json()["code"] == "reservation_not_active"
    await assert_expired(db, "reservations", held["id"], "reservation.expired")
    assert await available(db) == 3


async def test_booking_a_lapsed_hold_commits_its_expiry_then_refuses(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=3)
    held = await hold(api, 5, 2)
    lapse_holds(api)
    body = {"event_id": 1, "quantity": 2, "reservation_id": held["id"]}
    headers = api.headers(5, **{"X-Request-ID": "book-lapsed"})
    response = await api.client.post("/api/v1/bookings/", json=body, headers=headers)
    assert response.status_code == 409 and response.json()["code"] == "reservation_not_active"
    await assert_expired(db, "reservations", held["id"], "reservation.expired")
    assert await available(db) == 3 and await count(db, "bookings") == 0
    # The expiry is audited with the request that met the lapsed hold (it runs in that request's time).
    expired = f"action = 'reservation.expired' AND request_id = 'book-lapsed' AND entity_id = {held['id']}"
    assert await count(db, "audit_log", expired) == 1


async def test_cancelling_a_lapsed_booking_commits_its_expiry_then_refuses(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=3)
    booking = (await api.book(5, 1, 2)).json()
    clock.advance(timedelta(minutes=api.settings.booking_timeout_minutes, seconds=1))
    response = await api.client.put(f"/api/v1/bookings/{booking['id']}/cancel", headers=api.headers(5))
    assert response.status_code == 409 and response.json()["code"] == "booking_not_cancellable"
    await assert_expired(db, "bookings", booking["id"], "booking.expired")
    assert await available(db) == 3


async def lapsed_offer(api: Api) -> dict[str, Any]:
    """User 1's offer of the one seat of event 1, lapsed; user 2 waits behind."""
    await api.create_event(1, capacity=1)
    sold = (await api.book(100, 1)).json()
    for user in (1, 2):
        joined = await api.client.post(
            "/api/v1/waitlist/", json={"event_id": 1, "quantity": 1}, headers=api.headers(user)
        )
        assert joined.status_code == 201, joined.text
    cancelled = await api.client.put(f"/api/v1/bookings/{sold['id']}/cancel", headers=api.headers(100))
    assert cancelled.status_code == 200, cancelled.text
    offer = (await api.client.get("/api/v1/waitlist/", headers=api.headers(1))).json()["items"][0]
    assert offer["status"] == "notified"
    clock.advance(timedelta(hours=api.settings.waitlist_notification_timeout_hours, seconds=1))
    return dict(offer)


async def test_booking_a_lapsed_offer_commits_its_expiry_then_refuses(api: Api, db: AsyncConnection) -> None:
    offer = await lapsed_offer(api)
    response = await api.client.post(f"/api/v1/waitlist/{offer['id']}/book", headers=api.headers(1))
    assert response.status_code == 409 and response.json()["code"] == "offer_not_available"
    await assert_expired(db, "waitlist_entries", offer["id"], "waitlist.expired")
    assert await count(db, "waitlist_entries", "user_id = 2 AND status = 'notified'") == 1


async def test_cancelling_a_lapsed_offer_commits_its_expiry_then_refuses(api: Api, db: AsyncConnection) -> None:
    offer = await lapsed_offer(api)
    response = await api.client.put(f"/api/v1/waitlist/{offer['id']}/cancel", headers=api.headers(1))
    assert response.status_code == 409 and response.json()["code"] == "waitlist_not_cancellable"
    await assert_expired(db, "waitlist_entries", offer["id"], "waitlist.expired")
    assert await count(db, "waitlist_entries", "user_id = 2 AND status = 'notified'") == 1


async def test_a_released_hold_is_announced_with_the_figures_its_offers_leave(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=3)
    held = await hold(api, 5, 3)
    for user in (1, 2):
        joined = await api.client.post(
            "/api/v1/waitlist/", json={"event_id": 1, "quantity": 1}, headers=api.headers(user)
        )
        assert joined.status_code == 201, joined.text
    version = (await row_of_event(db))["version"]
    release = "/api/v1/availability/1/release"
    response = await api.client.delete(release, params={"reservation_id": held["id"]}, headers=api.headers(5))
    assert response.status_code == 200, response.text
    event = await row_of_event(db)
    assert (event["available_capacity"], event["reserved_capacity"]) == (1, 2)
    assert event["version"] == version + 2  # the hold's seats back, then both offers' in one move
    await db.rollback()
    kinds = (await db.execute(text("SELECT kind FROM outbox ORDER BY id DESC LIMIT 3"))).scalars().all()
    assert kinds == ["availability_changed", "waitlist_notified", "waitlist_notified"]
    last = (await db.execute(text("SELECT payload FROM outbox ORDER BY id DESC LIMIT 1"))).scalar_one()
    figures = last["availability_data"]
    assert (figures["available_capacity"], figures["reserved_capacity"]) == (1, 2)
    audited = "SELECT after FROM audit_log WHERE action = 'reservation.released'"
    assert (await db.execute(text(audited))).scalar_one()["status"] == "released"


async def row_of_event(db: AsyncConnection, event_id: int = 1) -> dict[str, Any]:
    await db.rollback()
    query = text("SELECT * FROM event_availability WHERE event_id = :id")
    return dict((await db.execute(query, {"id": event_id})).mappings().one())
