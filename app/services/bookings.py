"""Bookings: creation, reads, and every status change of SPEC section 3 (app/services/lifecycles.py
declares them)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Select, UnaryExpression, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import clock
from app.core.errors import BadRequestError, NotFoundError, ReservationNotActiveError
from app.core.security import Principal
from app.db.queries import get_owned, paginate, where_equal, where_within
from app.models.booking import Booking
from app.models.enums import BookingStatus, PaymentStatus
from app.models.reservation import Reservation
from app.runtime import Runtime
from app.schemas.booking import BookingCreate, BookingRead
from app.services import admission, idempotency
from app.services.audit import Actor
from app.services.booking_batcher import BookingRequest
from app.services.booking_rows import booking_amount, booking_row, payment_deadline
from app.services.changes import move, refuse_if_lapsed
from app.services.lifecycles import BOOKING, PAYMENT, RESERVATION, describe_booking
from app.services.seats import get_event
from app.services.unit_of_work import UnitOfWork


def check_quantity(runtime: Runtime, quantity: int) -> None:
    limit = runtime.settings.max_tickets_per_booking
    if quantity > limit:
        raise BadRequestError(f"quantity must be at most {limit}")


async def create_booking(
    runtime: Runtime,
    principal: Principal,
    data: BookingCreate,
    claim: idempotency.Claim | None,
    admission_token: str | None = None,
) -> BookingRead:
    """A pending booking: of the caller's hold (its seats are already theirs), or of new seats
    through the batcher (behind the event's waiting room, if enabled)."""
    check_quantity(runtime, data.quantity)
    if data.reservation_id is not None:
        return BookingRead.model_validate(await _book_reservation(runtime, principal, data, claim))
    request = BookingRequest(
        admission=admission.read(runtime.settings, admission_token),
        actor=Actor.of(principal),
        user_id=principal.user_id,
        event_id=data.event_id,
        quantity=data.quantity,
        payment_method=data.payment_method,
        notes=data.notes,
        claim=claim,
    )
    return await runtime.batcher.submit(request)


async def _book_reservation(
    runtime: Runtime, principal: Principal, data: BookingCreate, claim: idempotency.Claim | None
) -> Booking:
    """Turn the user's live hold into a pending booking; its seats are already reserved."""

    async def operation(uow: UnitOfWork) -> Booking:
        hold = await uow.session.scalar(
            select(Reservation)
            .where(Reservation.id == data.reservation_id, Reservation.user_id == principal.user_id)
            .with_for_update()
        )
        if hold is None or hold.event_id != data.event_id:
            raise NotFoundError(f"Reservation {data.reservation_id} not found for this event")
        lapsed = ReservationNotActiveError("The reservation has expired")
        await refuse_if_lapsed(uow, RESERVATION, hold, lapsed)
        RESERVATION.transition("convert", hold.status)  # refused now unless the hold is active
        if hold.quantity != data.quantity:
            raise BadRequestError(f"quantity must equal the reservation's {hold.quantity} seats")
        actor = Actor.of(principal)
        booking = await book_held_seats(
            uow,
            actor,
            principal.user_id,
            hold.event_id,
            hold.quantity,
            claim,
            payment_method=data.payment_method,
            notes=data.notes,
            reservation_id=hold.id,
        )
        await move(uow, RESERVATION, hold, "convert", actor, booking_id=booking.id)
        return booking

    # The hold's seats are already reserved: the counters do not move, so no event lock, only the
    # hold's row (SPEC section 2 locks capacity changes). An expiry frees seats: that takes the lock.
    # Under load, the event's holds being booked share a transaction.
    return await runtime.transactions.grouped_unlocked(data.event_id, operation)


async def book_held_seats(
    uow: UnitOfWork,
    actor: Actor,
    user_id: int,
    event_id: int,
    quantity: int,
    claim: idempotency.Claim | None,
    **links: Any,
) -> Booking:
    """A pending booking for seats already reserved for it (a hold or a waitlist offer): the
    counters do not move, the seats simply change hands."""
    event = await get_event(uow.session, event_id)
    booking_amount(event, quantity)  # refused if it could not be stored
    expires_at = payment_deadline(uow.settings, uow.now)
    booking = Booking(**booking_row(user_id, event, quantity, uow.now, expires_at, **links))
    rule = BOOKING.create(uow, booking, "book_held")
    await uow.session.flush()
    uow.holds_until(event_id, expires_at)
    BOOKING.record(uow, rule, booking, actor, None, describe_booking(booking))
    uow.answer(claim, 201, BookingRead.model_validate(booking).model_dump(mode="json"))
    return booking


async def _change(
    runtime: Runtime,
    booking_id: int,
    event_id: int,
    trigger: str,
    actor: Actor,
    owner_id: int | None = None,
    payment: str | None = None,
    **changes: Any,
) -> Booking:
    """Make `trigger`'s transition of a booking under its event's lock, its payment's `payment`
    along with it. A paid booking cancelled is refunded too (SPEC section 3)."""

    async def operation(uow: UnitOfWork) -> Booking:
        booking = await _load(uow.session, booking_id, owner_id)
        await refuse_if_lapsed(uow, BOOKING, booking, BOOKING.refusal(trigger, "The booking has expired"))
        paid = booking.payment_status is PaymentStatus.COMPLETED
        along = payment or ("refund" if trigger == "cancel" and paid else None)
        await move(uow, BOOKING, booking, trigger, actor, along=[(PAYMENT, along)] if along else [], **changes)
        return booking

    return await runtime.transactions.locked(event_id, operation)


async def _load(session: AsyncSession, booking_id: int, owner_id: int | None) -> Booking:
    booking = await get_owned(session, Booking, booking_id, owner_id)
    if booking is None:
        raise NotFoundError(f"Booking {booking_id} not found")
    return booking


async def get_booking(runtime: Runtime, booking_id: int, owner_id: int | None = None) -> Booking:
    """Read a booking; a pending one past its expiry is expired first (expiry on read)."""
    async with runtime.sessionmaker() as session:
        booking = await _load(session, booking_id, owner_id)
    if booking.lapsed:
        return await expire_booking(runtime, booking.id, booking.event_id)
    return booking


async def expire_booking(runtime: Runtime, booking_id: int, event_id: int) -> Booking:
    async def operation(uow: UnitOfWork) -> Booking:
        booking = await _load(uow.session, booking_id, None)
        if booking.lapsed:
            await move(uow, BOOKING, booking, "expire", Actor.system())
        return booking

    return await runtime.transactions.locked(event_id, operation)


async def cancel_booking(runtime: Runtime, principal: Principal, booking_id: int) -> Booking:
    booking = await get_booking(runtime, booking_id, principal.user_id)
    return await _change(
        runtime,
        booking.id,
        booking.event_id,
        "cancel",
        Actor.of(principal),
        owner_id=principal.user_id,
        cancelled_at=clock.now(),
    )


async def confirm_booking(runtime: Runtime, actor: Actor, booking_id: int, note: str | None = None) -> Booking:
    """Manual confirmation by an admin: payment is marked completed with method `manual`."""
    booking = await get_booking(runtime, booking_id)
    changes: dict[str, Any] = {"confirmed_at": clock.now(), "payment_method": "manual"}
    if note:
        changes["notes"] = note
    return await _change(runtime, booking.id, booking.event_id, "confirm", actor, payment="complete", **changes)


async def refund_booking(runtime: Runtime, actor: Actor, booking_id: int, reason: str | None) -> Booking:
    booking = await get_booking(runtime, booking_id)
    changes: dict[str, Any] = {"cancelled_at": clock.now()}
    if reason:
        changes["notes"] = reason
    return await _change(
        runtime, booking.id, booking.event_id, "refund", actor, payment="refund_with_booking", **changes
    )


@dataclass(frozen=True, slots=True)
class BookingFilter:
    user_id: int | None = None
    event_id: int | None = None
    status: BookingStatus | None = None
    payment_status: PaymentStatus | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


SORTS: dict[str, UnaryExpression[Any]] = {
    "-created_at": Booking.created_at.desc(),
    "created_at": Booking.created_at.asc(),
    "-total_amount": Booking.total_amount.desc(),
    "total_amount": Booking.total_amount.asc(),
}


def _filtered(query: Select[Any], flt: BookingFilter) -> Select[Any]:
    equal = {
        Booking.user_id: flt.user_id,
        Booking.event_id: flt.event_id,
        Booking.status: flt.status,
        Booking.payment_status: flt.payment_status,
    }
    return where_within(where_equal(query, equal), Booking.created_at, flt.created_from, flt.created_to)


async def list_bookings(
    runtime: Runtime, flt: BookingFilter, limit: int, offset: int, sort: str = "-created_at", *, lag_ok: bool = False
) -> tuple[list[Booking], int]:
    """A page of bookings. Matching pending bookings past their expiry are expired first (expiry
    on read, up to a page's worth; the sweeper takes any beyond that within its interval).
    `lag_ok` (admin lists) reads from the replicas, unless this call expired something there: a
    replica may not have the expiry yet, so the page then comes from the primary."""
    reader = runtime.read_sessionmaker if lag_ok else runtime.sessionmaker
    if await _expire_lapsed(runtime, reader, flt, limit):
        reader = runtime.sessionmaker
    query = _filtered(select(Booking), flt).order_by(SORTS[sort], Booking.id.desc())
    async with reader() as session:
        return await paginate(session, query, limit, offset)


async def _expire_lapsed(
    runtime: Runtime, reader: async_sessionmaker[AsyncSession], flt: BookingFilter, most: int
) -> int:
    # Whatever the status filter: a lapsed booking is about to become `expired`.
    lapsed = (
        _filtered(select(Booking), replace(flt, status=None))
        .where(Booking.lapsed)
        .with_only_columns(Booking.id, Booking.event_id)
    )
    async with reader() as session:
        rows = (await session.execute(lapsed.limit(most))).all()
    for booking_id, event_id in rows:
        await expire_booking(runtime, booking_id, event_id)
    return len(rows)
