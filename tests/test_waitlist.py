"""The waitlist: fair offers of freed seats, never double-booked."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import clock
from app.services import sweeper
from tests.checks import assert_invariant, count
from tests.conftest import Api


async def join(api: Api, user: int, quantity: int, event_id: int = 1) -> dict[str, Any]:
    response = await api.client.post(
        "/api/v1/waitlist/", json={"event_id": event_id, "quantity": quantity}, headers=api.headers(user)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def entry(api: Api, user: int) -> dict[str, Any]:
    items = (await api.client.get("/api/v1/waitlist/", headers=api.headers(user))).json()["items"]
    return dict(items[0])


async def cancel(api: Api, user: int, booking_id: int) -> None:
    response = await api.client.put(f"/api/v1/bookings/{booking_id}/cancel", headers=api.headers(user))
    assert response.status_code == 200, response.text


async def sold_out(api: Api, seats: int) -> list[dict[str, Any]]:
    """An event of `seats` single-seat bookings by users 100, 101, ..."""
    await api.create_event(1, capacity=seats)
    return [(await api.book(100 + i, 1)).json() for i in range(seats)]


async def test_skip_large_entry_then_serve_it_and_book_from_offer(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=3)
    single = (await api.book(100, 1, 1)).json()
    double = (await api.book(101, 1, 2)).json()
    first, second, third = await join(api, 1, 2), await join(api, 2, 1), await join(api, 3, 1)
    assert [first["position"], second["position"], third["position"]] == [1, 2, 3]

    await cancel(api, 100, single["id"])  # one seat: too few for user 1, so user 2 gets it
    assert (await entry(api, 1))["status"] == "pending"
    offered = await entry(api, 2)
    assert offered["status"] == "notified" and offered["expires_at"] is not None
    assert (await entry(api, 3))["status"] == "pending"
    assert (await entry(api, 1))["position"] == 1

    await cancel(api, 101, double["id"])  # two seats at once: user 1's turn, ahead of user 3
    assert (await entry(api, 1))["status"] == "notified"
    assert (await entry(api, 3))["status"] == "pending"
    assert await count(db, "outbox", "kind = 'waitlist_notified'") == 2

    booked = await api.client.post(f"/api/v1/waitlist/{offered['id']}/book", headers=api.headers(2))
    assert booked.status_code == 201, booked.text
    assert booked.json()["status"] == "pending" and booked.json()["waitlist_entry_id"] == offered["id"]
    assert (await entry(api, 2))["status"] == "booked"
    data = await api.availability(1)
    assert (data["available_capacity"], data["reserved_capacity"]) == (0, 3)
    await assert_invariant(db)


async def test_public_cannot_take_an_offered_seat(api: Api, db: AsyncConnection) -> None:
    bookings = await sold_out(api, 2)
    await join(api, 1, 1)
    await cancel(api, 100, bookings[0]["id"])
    refused = await api.book(50, 1, 1)
    assert refused.status_code == 409 and refused.json()["code"] == "insufficient_capacity"
    await assert_invariant(db)


async def test_lapsed_offer_passes_to_the_next(api: Api, db: AsyncConnection) -> None:
    bookings = await sold_out(api, 2)
    await join(api, 1, 1)
    await join(api, 2, 1)
    await cancel(api, 100, bookings[0]["id"])
    lapsed = await entry(api, 1)
    clock.advance(timedelta(hours=api.settings.waitlist_notification_timeout_hours, seconds=1))
    await sweeper.sweep_once(api.runtime)
    assert (await entry(api, 1))["status"] == "expired"
    assert (await entry(api, 2))["status"] == "notified"
    late = await api.client.post(f"/api/v1/waitlist/{lapsed['id']}/book", headers=api.headers(1))
    assert late.status_code == 409 and late.json()["code"] == "offer_not_available"
    assert await count(db, "outbox", "kind = 'waitlist_expired'") == 1
    await assert_invariant(db)


async def test_booking_a_lapsed_offer_before_the_sweeper_is_refused(api: Api, db: AsyncConnection) -> None:
    bookings = await sold_out(api, 1)
    await join(api, 1, 1)
    await join(api, 2, 1)
    await cancel(api, 100, bookings[0]["id"])
    offer = await entry(api, 1)
    clock.advance(timedelta(hours=api.settings.waitlist_notification_timeout_hours, seconds=1))
    late = await api.client.post(f"/api/v1/waitlist/{offer['id']}/book", headers=api.headers(1))
    assert late.status_code == 409
    assert (await entry(api, 2))["status"] == "notified"
    assert await count(db, "bookings", "waitlist_entry_id IS NOT NULL") == 0
    await assert_invariant(db)


async def test_declined_offer_passes_at_once(api: Api, db: AsyncConnection) -> None:
    bookings = await sold_out(api, 2)
    offer_to = await join(api, 1, 1)
    await join(api, 2, 1)
    await cancel(api, 100, bookings[0]["id"])
    declined = await api.client.put(f"/api/v1/waitlist/{offer_to['id']}/cancel", headers=api.headers(1))
    assert declined.status_code == 200 and declined.json()["status"] == "cancelled"
    assert (await entry(api, 2))["status"] == "notified"
    assert await count(db, "outbox", "kind = 'waitlist_cancelled'") == 1
    await assert_invariant(db)


async def test_admin_priority_changes_the_order(api: Api, db: AsyncConnection) -> None:
    bookings = await sold_out(api, 2)
    await join(api, 1, 1)
    second = await join(api, 2, 1)
    moved = await api.client.put(
        f"/api/v1/admin/waitlist/{second['id']}", json={"priority": 1, "reason": "VIP"}, headers=api.admin()
    )
    assert moved.status_code == 200 and moved.json()["priority"] == 1
    assert (await entry(api, 2))["position"] == 1
    await cancel(api, 100, bookings[0]["id"])
    assert (await entry(api, 2))["status"] == "notified"
    assert (await entry(api, 1))["status"] == "pending"
    audit = await api.client.get(
        "/api/v1/admin/audit/", params={"action": "waitlist.priority_changed"}, headers=api.admin()
    )
    row = audit.json()["items"][0]
    assert row["actor_type"] == "admin" and row["actor_id"] == 1 and row["after"]["reason"] == "VIP"
    listed = await api.client.get("/api/v1/admin/waitlist/", params={"event_id": 1}, headers=api.admin())
    assert listed.json()["total"] == 2
    removed = await api.client.put(f"/api/v1/admin/waitlist/{second['id']}", json={"remove": True}, headers=api.admin())
    assert removed.json()["status"] == "cancelled"
    await assert_invariant(db)


async def test_concurrent_cancellations_never_offer_more_than_freed(api: Api, db: AsyncConnection) -> None:
    bookings = await sold_out(api, 50)
    for user in range(1, 81):
        await join(api, user, 1 + user % 2)
    await asyncio.gather(*(cancel(api, 100 + i, booking["id"]) for i, booking in enumerate(bookings)))
    notified = (
        await api.client.get(
            "/api/v1/admin/waitlist/", params={"status": "notified", "limit": 100}, headers=api.admin()
        )
    ).json()["items"]
    # Whatever the order the cancellations commit in, every freed seat is offered: the 40 one-seat
    # entries each take a seat as it comes free (a two-seat entry is skipped until two are free), and
    # the 10 seats left go to 5 two-seat entries, in the order they joined.
    assert sum(e["quantity"] for e in notified) == 50
    assert sorted(e["user_id"] for e in notified) == sorted([*range(2, 81, 2), *range(1, 11, 2)])
    assert await count(db, "waitlist_entries", "status = 'notified'") == 45
    data = await api.availability(1)
    assert (data["available_capacity"], data["reserved_capacity"]) == (0, 50)
    await assert_invariant(db)


async def test_join_rules(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=3)
    open_seats = await api.client.post("/api/v1/waitlist/", json={"event_id": 1, "quantity": 2}, headers=api.headers(1))
    assert open_seats.status_code == 409 and open_seats.json()["code"] == "seats_available"
    await api.book(100, 1, 2)
    await join(api, 1, 2)
    twice = await api.client.post("/api/v1/waitlist/", json={"event_id": 1, "quantity": 2}, headers=api.headers(1))
    assert twice.status_code == 409 and twice.json()["code"] == "already_waitlisted"
    assert await count(db, "waitlist_entries") == 1


async def test_join_is_idempotent(api: Api, db: AsyncConnection) -> None:
    await sold_out(api, 1)
    headers = api.headers(1, **{"Idempotency-Key": "wait-1"})
    body = {"event_id": 1, "quantity": 1}
    first = await api.client.post("/api/v1/waitlist/", json=body, headers=headers)
    second = await api.client.post("/api/v1/waitlist/", json=body, headers=headers)
    assert first.status_code == second.status_code == 201 and first.json() == second.json()
    assert await count(db, "waitlist_entries") == 1


async def test_another_users_entry_is_404(api: Api) -> None:
    await sold_out(api, 1)
    mine = await join(api, 1, 1)
    for method, url in (
        ("PUT", f"/api/v1/waitlist/{mine['id']}/cancel"),
        ("POST", f"/api/v1/waitlist/{mine['id']}/book"),
    ):
        assert (await api.client.request(method, url, headers=api.headers(2))).status_code == 404


async def test_entry_not_notified_cannot_book(api: Api) -> None:
    await sold_out(api, 1)
    mine = await join(api, 1, 1)
    response = await api.client.post(f"/api/v1/waitlist/{mine['id']}/book", headers=api.headers(1))
    assert response.status_code == 409 and response.json()["code"] == "offer_not_available"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"event_id": 1, "quantity": 0}, 422, "validation_error"),
        ({"event_id": 1, "quantity": 11}, 400, "bad_request"),  # over MAX_TICKETS_PER_BOOKING
        ({"event_id": 1}, 422, "validation_error"),
        ({"event_id": "one", "quantity": 1}, 422, "validation_error"),
    ],
)
async def test_bad_waitlist_input_writes_nothing(
    api: Api, db: AsyncConnection, body: dict[str, object], status: int, code: str
) -> None:
    await sold_out(api, 1)
    response = await api.client.post("/api/v1/waitlist/", json=body, headers=api.headers(1))
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert await count(db, "waitlist_entries") == 0
