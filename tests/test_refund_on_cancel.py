"""A paid booking cancelled by its owner asks for the money back (SPEC section 3)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.checks import assert_invariant, count
from tests.conftest import Api
from tests.support import figures, messages_about, pay, webhook


async def test_cancelling_a_paid_booking_refunds_it(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5, price="20.00")
    booking = (await api.book(5, 1, 2)).json()
    assert (await webhook(api, await pay(api, 5, booking["id"]))).status_code == 200

    response = await api.client.put(f"/api/v1/bookings/{booking['id']}/cancel", headers=api.headers(5))
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["payment_status"] == "refunded"
    assert cancelled["cancelled_at"] is not None
    assert await figures(api) == (5, 0, 0)
    await assert_invariant(db)

    messages = await messages_about(db, booking["id"])
    expected = ["BookingCreated", "BookingConfirmed", "BookingCancelled", "BookingRefunded"]
    assert [m["type"] for m in messages] == expected
    for message in messages[-2:]:
        assert message["booking_data"]["status"] == "cancelled"
        assert message["booking_data"]["payment_status"] == "refunded"
        assert message["booking_data"]["total_amount"] == "40.00" and message["user_id"] == 5

    await db.rollback()
    refund = (
        await db.execute(
            text(
                "SELECT actor_type, actor_id, before, after FROM audit_log "
                "WHERE entity_type = 'booking' AND entity_id = :id AND action = 'payment.refund_required'"
            ),
            {"id": booking["id"]},
        )
    ).one()
    assert (refund.actor_type, refund.actor_id) == ("user", 5)
    assert refund.before["payment_status"] == "completed" and refund.after["payment_status"] == "refunded"
    assert refund.after["status"] == "cancelled"
    admin_view = await api.client.get(f"/api/v1/admin/bookings/{booking['id']}", headers=api.admin())
    actions = [entry["action"] for entry in admin_view.json()["audit"]]
    assert actions[-2:] == ["booking.cancelled", "payment.refund_required"]


async def test_cancelling_an_unpaid_booking_refunds_nothing(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    pending = (await api.book(5, 1)).json()
    manual = (await api.book(5, 1)).json()
    await api.client.put(f"/api/v1/admin/bookings/{manual['id']}/confirm", headers=api.admin())
    # An admin's manual confirmation marks the payment completed: that booking is refunded too.
    for booking, payment_status in ((pending, "pending"), (manual, "refunded")):
        response = await api.client.put(f"/api/v1/bookings/{booking['id']}/cancel", headers=api.headers(5))
        assert response.status_code == 200
        assert response.json()["payment_status"] == payment_status
    assert await count(db, "outbox", "kind = 'refunded'") == 1
    assert await count(db, "audit_log", "action = 'payment.refund_required'") == 1


async def test_a_repeated_cancel_refunds_once(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    booking = (await api.book(5, 1)).json()
    await webhook(api, await pay(api, 5, booking["id"]))
    first = await api.client.put(f"/api/v1/bookings/{booking['id']}/cancel", headers=api.headers(5))
    again = await api.client.put(f"/api/v1/bookings/{booking['id']}/cancel", headers=api.headers(5))
    assert first.status_code == 200 and again.status_code == 409
    assert await count(db, "outbox", "kind = 'refunded'") == 1
