"""Payments and admin: the provider's signed webhook, confirm, refund, overviews and audit."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from redis.asyncio.lock import Lock
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import clock
from app.core.config import Settings
from app.services.payments import sign
from tests.checks import assert_invariant, count
from tests.conftest import WEBHOOK_SECRET, Api, running_app
from tests.support import figures, pay, webhook


async def test_happy_path_booking_paid_confirmed(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5, price="20.00")
    booking = (await api.book(5, 1, 2)).json()
    assert await figures(api) == (3, 2, 0)
    await assert_invariant(db)
    intent = await pay(api, 5, booking["id"])
    assert intent["amount"] == "40.00" and intent["currency"] == "USD" and intent["payment_status"] == "processing"
    await assert_invariant(db)
    response = await webhook(api, intent)
    assert response.status_code == 200 and response.json()["result"] == "applied"
    confirmed = (await api.client.get(f"/api/v1/bookings/{booking['id']}", headers=api.headers(5))).json()
    assert confirmed["status"] == "confirmed" and confirmed["payment_status"] == "completed"
    assert confirmed["confirmed_at"] is not None
    assert await figures(api) == (3, 0, 2)
    await assert_invariant(db)
    assert await count(db, "outbox", "kind = 'confirmed'") == 1
    actions = await count(db, "audit_log", f"entity_id = {booking['id']} AND entity_type = 'booking'")
    assert actions == 3  # created, payment started, confirmed
    assert await count(db, "audit_log", "actor_type = 'payment-provider' AND action = 'booking.confirmed'") == 1


async def test_failed_then_retried_payment(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    booking = (await api.book(5, 1)).json()
    failed = await webhook(api, await pay(api, 5, booking["id"]), "failed")
    assert failed.status_code == 200 and failed.json()["payment_status"] == "failed"
    assert await count(db, "outbox", "kind = 'payment_failed'") == 1
    state = (await api.client.get(f"/api/v1/bookings/{booking['id']}/status", headers=api.headers(5))).json()
    assert state["status"] == "pending" and state["payment_status"] == "failed"
    second = await pay(api, 5, booking["id"])
    assert (await webhook(api, second)).json()["status"] == "confirmed"
    await assert_invariant(db)


async def test_duplicate_webhook_changes_nothing(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    booking = (await api.book(5, 1)).json()
    intent = await pay(api, 5, booking["id"])
    assert (await webhook(api, intent)).json()["result"] == "applied"
    audit_rows = await count(db, "audit_log")
    again = await webhook(api, intent)
    assert again.status_code == 200 and again.json()["result"] == "duplicate"
    assert await count(db, "audit_log") == audit_rows
    assert await count(db, "outbox", "kind = 'confirmed'") == 1
    assert await figures(api) == (4, 0, 1)


async def test_bad_signature_stale_timestamp_wrong_amount(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5, price="20.00")
    booking = (await api.book(5, 1)).json()
    intent = await pay(api, 5, booking["id"])
    forged = await webhook(api, intent, secret="not-the-secret")
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_signature"
    stale = await webhook(api, intent, timestamp=int(time.time()) - 301)
    assert stale.status_code == 401 and stale.json()["code"] == "stale_signature"
    unsigned = await api.client.post("/api/v1/payments/webhook", json={"payment_reference": "x"})
    assert unsigned.status_code == 401
    wrong = await webhook(api, intent, amount="19.99")
    assert wrong.status_code == 422 and wrong.json()["code"] == "amount_mismatch"
    other_currency = await webhook(api, intent, currency="EUR")
    assert other_currency.status_code == 422
    assert await count(db, "audit_log", "action = 'payment.refused_amount_mismatch'") == 2
    unknown = await webhook(api, {**intent, "payment_reference": "pay_unknown"})
    assert unknown.status_code == 404
    body = b'{"payment_reference": 5}'
    malformed = await api.client.post(
        "/api/v1/payments/webhook", content=body, headers={"Evently-Signature": sign(body, WEBHOOK_SECRET)}
    )
    assert malformed.status_code == 422
    state = (await api.client.get(f"/api/v1/bookings/{booking['id']}/status", headers=api.headers(5))).json()
    assert state["status"] == "pending" and state["payment_status"] == "processing"
    await assert_invariant(db)


async def test_late_success_with_seats_free_confirms(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    booking = (await api.book(5, 1, 2)).json()
    intent = await pay(api, 5, booking["id"])
    clock.advance(timedelta(minutes=api.settings.booking_timeout_minutes, seconds=5))
    response = await webhook(api, intent)
    assert response.json()["status"] == "confirmed"
    assert await figures(api) == (3, 0, 2)
    await assert_invariant(db)


async def test_late_success_when_sold_out_is_refunded(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=2)
    booking = (await api.book(5, 1, 2)).json()
    intent = await pay(api, 5, booking["id"])
    clock.advance(timedelta(minutes=api.settings.booking_timeout_minutes, seconds=5))
    assert (await api.book(6, 1, 2)).status_code == 201  # the seats went to someone else
    response = await webhook(api, intent)
    assert response.json()["status"] == "expired" and response.json()["payment_status"] == "refunded"
    assert await count(db, "outbox", "kind = 'refunded'") == 1
    assert await figures(api) == (0, 2, 0)
    await assert_invariant(db)


async def test_admin_confirm_and_refused_transitions(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    booking = (await api.book(5, 1, 2)).json()
    url = f"/api/v1/admin/bookings/{booking['id']}"
    confirmed = await api.client.put(f"{url}/confirm", json={"note": "paid at the door"}, headers=api.admin())
    assert confirmed.status_code == 200
    assert confirmed.json()["payment_method"] == "manual" and confirmed.json()["payment_status"] == "completed"
    again = await api.client.put(f"{url}/confirm", headers=api.admin())
    assert again.status_code == 409 and again.json()["code"] == "booking_not_confirmable"
    other = (await api.book(6, 1, 1)).json()
    refund_pending = await api.client.put(f"/api/v1/admin/bookings/{other['id']}/refund", headers=api.admin())
    assert refund_pending.status_code == 409 and refund_pending.json()["code"] == "booking_not_refundable"
    assert await figures(api) == (2, 1, 2)
    await assert_invariant(db)


async def test_admin_refund_offers_seats_to_waitlist(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=2)
    booking = (await api.book(5, 1, 2)).json()
    await api.client.put(f"/api/v1/admin/bookings/{booking['id']}/confirm", headers=api.admin())
    joined = await api.client.post("/api/v1/waitlist/", json={"event_id": 1, "quantity": 2}, headers=api.headers(7))
    assert joined.status_code == 201
    refund = await api.client.put(
        f"/api/v1/admin/bookings/{booking['id']}/refund", json={"reason": "event moved"}, headers=api.admin()
    )
    assert refund.status_code == 200
    assert refund.json()["status"] == "refunded" and refund.json()["payment_status"] == "refunded"
    entry = (await api.client.get("/api/v1/waitlist/", headers=api.headers(7))).json()["items"][0]
    assert entry["status"] == "notified"
    assert await figures(api) == (0, 2, 0)
    await assert_invariant(db)


async def test_admin_lists_filters_and_audit(api: Api) -> None:
    await api.create_event(1, capacity=50)
    await api.create_event(2, capacity=50)
    for user in range(10, 15):
        await api.book(user, 1)
    await api.book(20, 2, 3)
    page = (await api.client.get("/api/v1/admin/bookings/", params={"limit": 2}, headers=api.admin())).json()
    assert page["total"] == 6 and len(page["items"]) == 2
    second = await api.client.get("/api/v1/admin/bookings/", params={"limit": 2, "offset": 2}, headers=api.admin())
    assert {b["id"] for b in page["items"]}.isdisjoint({b["id"] for b in second.json()["items"]})
    by_event = await api.client.get("/api/v1/admin/bookings/", params={"event_id": 2}, headers=api.admin())
    assert by_event.json()["total"] == 1
    by_user = await api.client.get("/api/v1/admin/bookings/", params={"user_id": 12}, headers=api.admin())
    assert by_user.json()["total"] == 1
    sorted_amount = await api.client.get(
        "/api/v1/admin/bookings/", params={"sort": "-total_amount"}, headers=api.admin()
    )
    assert sorted_amount.json()["items"][0]["quantity"] == 3
    detail = await api.client.get(f"/api/v1/admin/bookings/{by_event.json()['items'][0]['id']}", headers=api.admin())
    assert [a["action"] for a in detail.json()["audit"]] == ["booking.created"]
    overview = await api.client.get("/api/v1/admin/availability/", params={"sort": "-utilization"}, headers=api.admin())
    first = overview.json()["items"][0]
    assert first["event_id"] == 1 and first["bookings_by_status"] == {"pending": 5} and first["waitlist_length"] == 0
    assert first["utilization_percentage"] == 10.0
    audit = await api.client.get(
        "/api/v1/admin/audit/", params={"entity_type": "booking", "actor_id": 12}, headers=api.admin()
    )
    assert audit.json()["total"] == 1
    for url in (
        "/api/v1/admin/bookings/",
        "/api/v1/admin/availability/",
        "/api/v1/admin/waitlist/",
        "/api/v1/admin/audit/",
    ):
        assert (await api.client.get(url, headers=api.headers(5))).status_code == 403


async def test_admin_overview_never_counts_a_lapsed_hold(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=10)
    hold = await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 2}, headers=api.headers(5))
    assert hold.status_code == 201
    assert (await api.book(6, 1, 3)).status_code == 201
    lapse = max(api.settings.reservation_timeout_minutes, api.settings.booking_timeout_minutes)
    clock.advance(timedelta(minutes=lapse, seconds=1))
    # No sweep and no other read in between: the overview expires what lapsed before it answers.
    overview = await api.client.get("/api/v1/admin/availability/", headers=api.admin())
    [event] = overview.json()["items"]
    assert (event["available_capacity"], event["reserved_capacity"]) == (10, 0)
    assert event["bookings_by_status"] == {"expired": 1} and event["utilization_percentage"] == 0.0
    await assert_invariant(db)


async def test_admin_date_ranges_include_the_start_and_exclude_the_end(api: Api) -> None:
    await api.create_event(1, capacity=50)
    for user in (10, 11, 12):
        await api.book(user, 1)
    clock.advance(timedelta(hours=1))
    later = (await api.book(13, 1)).json()["created_at"]  # the bound is exactly this booking's time
    await api.book(14, 1)

    async def total(url: str, **params: Any) -> int:
        response = await api.client.get(url, params=params, headers=api.admin())
        assert response.status_code == 200
        return int(response.json()["total"])

    bookings, audit = "/api/v1/admin/bookings/", "/api/v1/admin/audit/"
    assert await total(bookings, created_from=later) == 2
    assert await total(bookings, created_to=later) == 3
    assert await total(bookings, created_from=later, created_to=later) == 0
    assert await total(audit, action="booking.created", since=later) == 2
    assert await total(audit, action="booking.created", until=later) == 3


async def test_sweeper_completes_bookings_after_the_event(api: Api, db: AsyncConnection) -> None:
    ends = (clock.now() + timedelta(hours=2)).isoformat()
    await api.create_event(1, capacity=5, ends_at=ends)
    booking = (await api.book(5, 1)).json()
    await api.client.put(f"/api/v1/admin/bookings/{booking['id']}/confirm", headers=api.admin())
    from app.services import sweeper

    await sweeper.sweep_once(api.runtime)
    assert await count(db, "bookings", "status = 'completed'") == 0
    clock.advance(timedelta(hours=3))
    await sweeper.sweep_once(api.runtime)
    assert await count(db, "bookings", "status = 'completed'") == 1
    assert await count(db, "outbox", "kind = 'completed'") == 1
    await assert_invariant(db)


async def test_payment_start_rules(api: Api) -> None:
    await api.create_event(1, capacity=5)
    booking = (await api.book(5, 1)).json()
    stranger = await api.client.post(
        f"/api/v1/bookings/{booking['id']}/payment", json={"payment_method": "card"}, headers=api.headers(6)
    )
    assert stranger.status_code == 404
    await pay(api, 5, booking["id"])
    twice = await api.client.post(
        f"/api/v1/bookings/{booking['id']}/payment", json={"payment_method": "card"}, headers=api.headers(5)
    )
    assert twice.status_code == 409 and twice.json()["code"] == "payment_in_progress"


async def test_starting_a_payment_does_not_queue_behind_the_event(settings: Settings, db: AsyncConnection) -> None:
    """It moves no seats, so it takes no event lock: while another instance holds the event (a rush of
    holds and bookings), buyers can still start paying."""
    async with running_app(settings.model_copy(update={"lock_wait_seconds": 0.2})) as api:
        await api.create_event(1, capacity=10)
        booking = (await api.book(5, 1)).json()
        elsewhere = Lock(api.runtime.redis.client, api.runtime.redis.key("lock", "event", 1), timeout=60)
        assert await elsewhere.acquire(blocking=False)
        try:
            started = await api.client.post(
                f"/api/v1/bookings/{booking['id']}/payment", json={"payment_method": "card"}, headers=api.headers(5)
            )
        finally:
            await elsewhere.release()
    assert started.status_code == 201, started.text
    assert await count(db, "bookings", "payment_status = 'processing'") == 1
