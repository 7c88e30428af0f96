"""Temporary holds of seats (`/availability/{event_id}/reserve` and `/release`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import clock
from app.core.errors import NotFoundError, ReservationNotActiveError
from app.core.security import Principal
from app.models.enums import ReservationStatus
from app.models.event_availability import EventAvailability
from app.models.reservation import Reservation
from app.schemas.availability import ReservationRead
from app.services import admission, audit, buyer_limit, idempotency, outbox, waitlist_offers
from app.services.audit import Actor
from app.services.booking_batcher import booking_amount
from app.services.bookings import check_quantity
from app.services.capacity import note_hold_expiry, run_locked, shift_seats, take_seats
from app.services.runtime import Runtime


def reservation_data(hold: Reservation) -> dict[str, Any]:
    return ReservationRead.model_validate(hold).model_dump(mode="json")


async def reserve(
    runtime: Runtime,
    principal: Principal,
    event_id: int,
    quantity: int,
    claim: idempotency.Claim | None,
    admission_token: str | None = None,
) -> Reservation:
    check_quantity(runtime, quantity)
    admission_pass = admission.read(runtime.settings, admission_token)

    async def operation(session: AsyncSession) -> Reservation:
        now = clock.now()

        async def may_hold(event: EventAvailability) -> None:
            admission.require(event, principal.user_id, admission_pass, now)
            booking_amount(event, quantity)  # refused now if its booking could not store the amount
            await buyer_limit.check(session, event, principal.user_id, quantity, now)

        event = await take_seats(session, event_id, quantity, gate=may_hold)
        hold = Reservation(
            user_id=principal.user_id,
            event_id=event_id,
            quantity=quantity,
            status=ReservationStatus.ACTIVE,
            expires_at=now + timedelta(minutes=runtime.settings.reservation_timeout_minutes),
            created_at=now,
            updated_at=now,
        )
        session.add(hold)
        await session.flush()
        note_hold_expiry(session, event_id, hold.expires_at)
        data = reservation_data(hold)
        await audit.record(
            session,
            audit.audit_row(Actor.of(principal), "reservation.created", "reservation", hold.id, now, after=data),
        )
        await outbox.enqueue(session, now, outbox.availability_message(event, now))
        await idempotency.store_in(session, claim, 201, data)
        return hold

    return await run_locked(runtime, event_id, operation)


async def release(runtime: Runtime, principal: Principal, event_id: int, reservation_id: int) -> Reservation:
    async def operation(session: AsyncSession) -> Reservation:
        hold = await _load(session, reservation_id, event_id, principal.user_id)
        now = clock.now()
        if hold.status is ReservationStatus.ACTIVE and hold.expires_at <= now:
            await end_hold(session, runtime, hold, ReservationStatus.EXPIRED, Actor.system(), now)
        if hold.status is not ReservationStatus.ACTIVE:
            raise ReservationNotActiveError(f"The reservation is {hold.status.value}, not active")
        return await end_hold(session, runtime, hold, ReservationStatus.RELEASED, Actor.of(principal), now)

    return await run_locked(runtime, event_id, operation)


async def expire_reservation(session: AsyncSession, runtime: Runtime, hold: Reservation, now: datetime) -> None:
    if hold.status is ReservationStatus.ACTIVE and hold.expires_at <= now:
        await end_hold(session, runtime, hold, ReservationStatus.EXPIRED, Actor.system(), now)


async def end_hold(
    session: AsyncSession,
    runtime: Runtime,
    hold: Reservation,
    status: ReservationStatus,
    actor: Actor,
    now: datetime,
) -> Reservation:
    """Release or expire a live hold: its seats return and are offered to the waitlist."""
    before = reservation_data(hold)
    hold.status, hold.updated_at = status, now
    await session.flush()
    event = await shift_seats(session, hold.event_id, available=hold.quantity, reserved=-hold.quantity)
    await audit.record(
        session,
        audit.audit_row(
            actor,
            f"reservation.{status.value}",
            "reservation",
            hold.id,
            now,
            before=before,
            after=reservation_data(hold),
        ),
    )
    await waitlist_offers.offer_freed_seats(session, runtime.settings, hold.event_id, now)
    await outbox.enqueue(session, now, outbox.availability_message(event, now))
    return hold


async def _load(session: AsyncSession, reservation_id: int, event_id: int, user_id: int) -> Reservation:
    hold = await session.scalar(
        select(Reservation)
        .where(
            Reservation.id == reservation_id,
            Reservation.event_id == event_id,
            Reservation.user_id == user_id,
        )
        .with_for_update()  # booking the hold takes its row, not the event: the two queue here
        .execution_options(populate_existing=True)
    )
    if hold is None:
        raise NotFoundError(f"Reservation {reservation_id} not found")
    return hold
