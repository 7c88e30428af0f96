"""Temporary holds of seats (`/availability/{event_id}/reserve` and `/release`)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFoundError, ReservationNotActiveError
from app.core.security import Principal
from app.models.reservation import Reservation
from app.runtime import Runtime
from app.schemas.availability import ReservationRead
from app.services import admission, buyer_limit, idempotency
from app.services.audit import Actor
from app.services.booking_rows import booking_amount
from app.services.bookings import check_quantity
from app.services.changes import move, refuse_if_lapsed
from app.services.lifecycles import RESERVATION, describe_hold
from app.services.seats import check_open, check_sales_open, get_event, take_seats
from app.services.unit_of_work import UnitOfWork


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

    async def operation(uow: UnitOfWork) -> Reservation:
        event = await get_event(uow.session, event_id)
        check_sales_open(event)
        admission.require(event, principal.user_id, admission_pass, uow.now)
        booking_amount(event, quantity)  # refused now if its booking could not store the amount
        await buyer_limit.check(uow.session, event, principal.user_id, quantity)
        check_open(event, quantity)
        await take_seats(uow, [(event, quantity)])
        hold = Reservation(
            user_id=principal.user_id,
            event_id=event_id,
            quantity=quantity,
            expires_at=uow.now + timedelta(minutes=runtime.settings.reservation_timeout_minutes),
            created_at=uow.now,
        )
        rule = RESERVATION.create(uow, hold, "hold")
        await uow.session.flush()
        uow.holds_until(event_id, hold.expires_at)
        RESERVATION.record(uow, rule, hold, Actor.of(principal), None, describe_hold(hold))
        uow.answer(claim, 201, ReservationRead.model_validate(hold).model_dump(mode="json"))
        return hold

    # Holds of one event are taken one at a time: under load, those waiting share a transaction.
    return await runtime.transactions.grouped(event_id, operation)


async def release(runtime: Runtime, principal: Principal, event_id: int, reservation_id: int) -> Reservation:
    async def operation(uow: UnitOfWork) -> Reservation:
        hold = await _load(uow.session, reservation_id, event_id, principal.user_id)
        await refuse_if_lapsed(uow, RESERVATION, hold, ReservationNotActiveError("The reservation has expired"))
        await move(uow, RESERVATION, hold, "release", Actor.of(principal))
        return hold

    return await runtime.transactions.locked(event_id, operation)


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
