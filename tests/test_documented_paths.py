"""Documented answers no other test reaches: payment after cancellation, an unpayable booking,
version conflicts past the retries, and an event lock that is never freed."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from redis.asyncio.lock import Lock
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import clock
from app.core.config import Settings
from tests.checks import assert_invariant, count
from tests.conftest import Api, running_app
from tests.support import concurrent_writer, figures, messages_about, pay, webhook


async def test_version_conflicts_past_the_retries_are_409_and_write_nothing(
    database_url: str, settings: Settings, db: AsyncConnection
) -> None:
    retries = 2
    async with running_app(settings.model_copy(update={"version_conflict_retries": retries})) as api:
        await api.create_event(1, capacity=10)
        async with concurrent_writer(database_url, settings, 1) as writer, asyncio.timeout(60):
            response, stale = await writer.make_stale(lambda: api.book(5, 1, 2))
    assert stale == retries + 1  # the first attempt and every retry
    assert (response.status_code, response.json()["code"]) == (409, "version_conflict")
    assert await count(db, "bookings") == 0
    assert await count(db, "audit_log", "entity_type = 'booking'") == 0
    assert await count(db, "outbox", "kind <> 'availability_changed'") == 0
    await assert_invariant(db)


async def test_an_event_lock_never_freed_is_503_lock_timeout_with_retry_after(
    settings: Settings, db: AsyncConnection
) -> None:
    async with running_app(settings.model_copy(update={"lock_wait_seconds": 0.2})) as api:
        await api.create_event(1, capacity=10)
        # Another instance holds the event's lock, taken the way the service takes it.
        elsewhere = Lock(api.runtime.redis.client, api.runtime.redis.key("lock", "event", 1), timeout=60)
        assert await elsewhere.acquire(blocking=False)
        try:
            response = await api.book(5, 1)
        finally:
            await elsewhere.release()
        assert (response.status_code, response.json()["code"]) == (503, "lock_timeout")
        assert int(response.headers["Retry-After"]) >= 1
        assert await count(db, "bookings") == 0
        assert (await api.book(5, 1)).status_code == 201  # free again once let go


async def test_a_payment_succeeding_after_cancellation_is_refunded(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5, price="20.00")
    booking = (await api.book(5, 1, 2)).json()
    intent = await pay(api, 5, booking["id"])
    cancelled = await api.client.put(f"/api/v1/bookings/{booking['id']}/cancel", headers=api.headers(5))
    assert cancelled.status_code == 200 and cancelled.json()["payment_status"] == "processing"
    response = await webhook(api, intent)
    assert response.status_code == 200 and response.json()["result"] == "applied"
    assert (response.json()["status"], response.json()["payment_status"]) == ("cancelled", "refunded")
    assert await figures(api) == (5, 0, 0)  # the seats stay free
    types = [m["type"] for m in await messages_about(db, booking["id"])]
    assert types == ["BookingCreated", "BookingCancelled", "BookingRefunded"]
    repeated = await webhook(api, intent)
    assert repeated.status_code == 200 and repeated.json()["result"] == "duplicate"
    assert await count(db, "outbox", "kind = 'refunded'") == 1
    await assert_invariant(db)


async def test_only_a_pending_unexpired_booking_can_be_paid(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    cancelled, lapsed = (await api.book(5, 1)).json(), (await api.book(5, 1)).json()
    await api.client.put(f"/api/v1/bookings/{cancelled['id']}/cancel", headers=api.headers(5))
    clock.advance(timedelta(minutes=api.settings.booking_timeout_minutes, seconds=1))
    for booking in (cancelled, lapsed):
        response = await api.client.post(
            f"/api/v1/bookings/{booking['id']}/payment", json={"payment_method": "card"}, headers=api.headers(5)
        )
        assert (response.status_code, response.json()["code"]) == (409, "booking_not_payable")
    assert await count(db, "audit_log", "action = 'payment.started'") == 0
    assert await count(db, "bookings", "payment_reference IS NOT NULL") == 0


async def test_a_version_conflict_is_not_replayed_to_a_retry_with_the_same_key(
    database_url: str, settings: Settings, db: AsyncConnection
) -> None:
    """409 `version_conflict` says "please retry": the retry with the same Idempotency-Key runs again."""
    async with running_app(settings.model_copy(update={"version_conflict_retries": 0})) as api:
        await api.create_event(1, capacity=10)
        headers = api.headers(5, **{"Idempotency-Key": "book-once"})
        body = {"event_id": 1, "quantity": 2}

        async def book() -> httpx.Response:
            return await api.client.post("/api/v1/bookings/", json=body, headers=headers)

        async with concurrent_writer(database_url, settings, 1) as writer, asyncio.timeout(60):
            refused, _ = await writer.make_stale(book)
        assert (refused.status_code, refused.json()["code"]) == (409, "version_conflict")
        retried = await book()
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert await count(db, "bookings") == 1
