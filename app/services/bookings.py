"""Bookings: creation, reads, and every status transition of SPEC section 3."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, UnaryExpression, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import clock
from app.core.errors import (
    BadRequestError,
    BookingNotCancellableError,
    BookingNotCompletableError,
    BookingNotConfirmableError,
    BookingNotExpirableError,
    BookingNotRefundableError,
    InvalidTransitionError,
    NotFoundError,
    ReservationNotActiveError,
)
from app.core.security import Principal
from app.db.queries import get_owned, paginate, where_equal, where_within
from app.models.booking import Booking
from app.models.enums import BookingStatus, PaymentStatus, ReservationStatus
from app.models.reservation import Reservation
from app.schemas.booking import BookingCreate, BookingRead
from app.services import admission, audit, idempotency, outbox, waitlist_offers
from app.services.audit import Actor
from app.services.booking_batcher import BookingRequest, booking_amount, new_booking_reference
from app.services.capacity import get_event, note_hold_expiry, run_in_transaction, run_locked, shift_seats
from app.services.runtime import Runtime

# (from, to) -> seat moves (available, reserved, confirmed) and the message announcing it.
TRANSITIONS: dict[tuple[BookingStatus, BookingStatus], tuple[tuple[int, int, int], str]] = {
    (BookingStatus.PENDING, BookingStatus.CONFIRMED): ((0, -1, 1), "BookingConfirmed"),
    (BookingStatus.PENDING, BookingStatus.CANCELLED): ((1, -1, 0), "BookingCancelled"),
    (BookingStatus.PENDING, BookingStatus.EXPIRED): ((1, -1, 0), "BookingExpired"),
    (BookingStatus.CONFIRMED, BookingStatus.CANCELLED): ((1, 0, -1), "BookingCancelled"),
    (BookingStatus.CONFIRMED, BookingStatus.REFUNDED): ((1, 0, -1), "BookingRefunded"),
    (BookingStatus.CONFIRMED, BookingStatus.COMPLETED): ((0, 0, 0), "BookingCompleted"),
}
# Target status -> the refusal when the booking's status has no transition to it (nothing moves to pending).
REFUSALS: dict[BookingStatus, type[InvalidTransitionError]] = {
    BookingStatus.CANCELLED: BookingNotCancellableError,
    BookingStatus.CONFIRMED: BookingNotConfirmableError,
    BookingStatus.REFUNDED: BookingNotRefundableError,
    BookingStatus.COMPLETED: BookingNotCompletableError,
    BookingStatus.EXPIRED: BookingNotExpirableError,
}


def booking_data(booking: Booking) -> dict[str, Any]:
    return BookingRead.model_validate(booking).model_dump(mode="json")


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

    async def operation(session: AsyncSession) -> Booking:
        now = clock.now()
        hold = await session.scalar(
            select(Reservation)
            .where(Reservation.id == data.reservation_id, Reservation.user_id == principal.user_id)
            .with_for_update()
        )
        if hold is None or hold.event_id != data.event_id:
            raise NotFoundError(f"Reservation {data.reservation_id} not found for this event")
        if hold.status is not ReservationStatus.ACTIVE or hold.expires_at <= now:
            raise ReservationNotActiveError("The reservation has expired or was already used")
        if hold.quantity != data.quantity:
            raise BadRequestError(f"quantity must equal the reservation's {hold.quantity} seats")
        booking = await book_held_seats(
            session,
            runtime,
            principal.user_id,
            hold.event_id,
            hold.quantity,
            now,
            payment_method=data.payment_method,
            notes=data.notes,
            reservation_id=hold.id,
        )
        before = {"status": hold.status.value}
        hold.status, hold.booking_id = ReservationStatus.CONVERTED, booking.id
        await session.flush()
        await _announce_new(session, principal, booking, now, claim)
        await audit.record(
            session,
            audit.audit_row(
                Actor.of(principal),
                "reservation.converted",
                "reservation",
                hold.id,
                now,
                before=before,
                after={"status": hold.status.value, "booking_id": booking.id},
            ),
        )
        return booking

    # The hold's seats are already reserved: the counters do not move, so no event lock, only the
    # hold's row (SPEC section 2 locks capacity changes).
    return await run_in_transaction(runtime, operation)


async def book_held_seats(
    session: AsyncSession,
    runtime: Runtime,
    user_id: int,
    event_id: int,
    quantity: int,
    now: datetime,
    **links: Any,
) -> Booking:
    """A pending booking for seats already reserved for it (a hold or a waitlist offer): the
    counters do not move, the seats simply change hands."""
    event = await get_event(session, event_id)
    expires_at = now + timedelta(minutes=runtime.settings.booking_timeout_minutes)
    booking = Booking(
        user_id=user_id,
        event_id=event_id,
        booking_reference=new_booking_reference(),
        quantity=quantity,
        total_amount=booking_amount(event, quantity),
        currency=event.currency,
        status=BookingStatus.PENDING,
        payment_status=PaymentStatus.PENDING,
        booking_date=now,
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
        **links,
    )
    session.add(booking)
    await session.flush()
    note_hold_expiry(session, event_id, expires_at)
    return booking


async def _announce_new(
    session: AsyncSession,
    principal: Principal,
    booking: Booking,
    now: datetime,
    claim: idempotency.Claim | None,
) -> None:
    data = booking_data(booking)
    await audit.record(
        session, audit.audit_row(Actor.of(principal), "booking.created", "booking", booking.id, now, after=data)
    )
    await outbox.enqueue(session, now, outbox.booking_message("BookingCreated", booking, now))
    await idempotency.store_in(session, claim, 201, data)


async def transition(
    session: AsyncSession,
    runtime: Runtime,
    booking: Booking,
    target: BookingStatus,
    actor: Actor,
    now: datetime,
    **changes: Any,
) -> Booking:
    """Move a booking to `target` in the caller's locked transaction, with every side effect.

    Cancelling a booking whose payment completed also refunds it (SPEC section 3): its payment
    status becomes `refunded` in the same change, and `BookingRefunded` follows `BookingCancelled`.
    """
    rule = TRANSITIONS.get((booking.status, target))
    if rule is None:
        raise REFUSALS[target](f"A {booking.status.value} booking cannot become {target.value}")
    (available, reserved, confirmed), message_type = rule
    refund = target is BookingStatus.CANCELLED and booking.payment_status is PaymentStatus.COMPLETED
    if refund:
        changes["payment_status"] = PaymentStatus.REFUNDED
    before = booking_data(booking)
    booking.status = target
    for name, value in changes.items():
        setattr(booking, name, value)
    booking.updated_at = now
    await session.flush()
    if (available, reserved, confirmed) != (0, 0, 0):
        q = booking.quantity
        await shift_seats(
            session,
            booking.event_id,
            available=available * q,
            reserved=reserved * q,
            confirmed=confirmed * q,
        )
    after = booking_data(booking)
    await audit.record(
        session,
        audit.audit_row(actor, f"booking.{target.value}", "booking", booking.id, now, before=before, after=after),
    )
    await outbox.enqueue(session, now, outbox.booking_message(message_type, booking, now))
    if refund:
        await announce_refund(session, actor, booking, before, after, now)
    if available:
        await waitlist_offers.offer_freed_seats(session, runtime.settings, booking.event_id, now)
    return booking


async def announce_refund(
    session: AsyncSession,
    actor: Actor,
    booking: Booking,
    before: dict[str, Any],
    after: dict[str, Any],
    now: datetime,
) -> None:
    """The money for a booking that no longer stands goes back: audited, and `BookingRefunded`
    published for the payment side to act on."""
    await audit.record(
        session,
        audit.audit_row(actor, "payment.refund_required", "booking", booking.id, now, before=before, after=after),
    )
    await outbox.enqueue(session, now, outbox.booking_message("BookingRefunded", booking, now))


async def _locked_transition(
    runtime: Runtime,
    booking_id: int,
    event_id: int,
    target: BookingStatus,
    actor: Actor,
    owner_id: int | None = None,
    **changes: Any,
) -> Booking:
    async def operation(session: AsyncSession) -> Booking:
        booking = await _load(session, booking_id, owner_id)
        now = clock.now()
        if booking.status is BookingStatus.PENDING and booking.is_expired and target is not BookingStatus.EXPIRED:
            await transition(session, runtime, booking, BookingStatus.EXPIRED, Actor.system(), now)
            return booking
        return await transition(session, runtime, booking, target, actor, now, **changes)

    booking = await run_locked(runtime, event_id, operation)
    if target is not BookingStatus.EXPIRED and booking.status is BookingStatus.EXPIRED:
        raise REFUSALS[target]("The booking has expired")
    return booking


async def _load(session: AsyncSession, booking_id: int, owner_id: int | None) -> Booking:
    booking = await get_owned(session, Booking, booking_id, owner_id)
    if booking is None:
        raise NotFoundError(f"Booking {booking_id} not found")
    return booking


async def get_booking(runtime: Runtime, booking_id: int, owner_id: int | None = None) -> Booking:
    """Read a booking; a pending one past its expiry is expired first (expiry on read)."""
    async with runtime.sessionmaker() as session:
        booking = await _load(session, booking_id, owner_id)
    if booking.status is BookingStatus.PENDING and booking.is_expired:
        return await expire_booking(runtime, booking.id, booking.event_id)
    return booking


async def expire_booking(runtime: Runtime, booking_id: int, event_id: int) -> Booking:
    async def operation(session: AsyncSession) -> Booking:
        booking = await _load(session, booking_id, None)
        if booking.status is BookingStatus.PENDING and booking.is_expired:
            await transition(session, runtime, booking, BookingStatus.EXPIRED, Actor.system(), clock.now())
        return booking

    return await run_locked(runtime, event_id, operation)


async def cancel_booking(runtime: Runtime, principal: Principal, booking_id: int) -> Booking:
    booking = await get_booking(runtime, booking_id, principal.user_id)
    return await _locked_transition(
        runtime,
        booking.id,
        booking.event_id,
        BookingStatus.CANCELLED,
        Actor.of(principal),
        owner_id=principal.user_id,
        cancelled_at=clock.now(),
    )


async def confirm_booking(runtime: Runtime, actor: Actor, booking_id: int, note: str | None = None) -> Booking:
    """Manual confirmation by an admin: payment is marked completed with method `manual`."""
    booking = await get_booking(runtime, booking_id)
    changes: dict[str, Any] = {
        "confirmed_at": clock.now(),
        "payment_status": PaymentStatus.COMPLETED,
        "payment_method": "manual",
    }
    if note:
        changes["notes"] = note
    return await _locked_transition(runtime, booking.id, booking.event_id, BookingStatus.CONFIRMED, actor, **changes)


async def refund_booking(runtime: Runtime, actor: Actor, booking_id: int, reason: str | None) -> Booking:
    booking = await get_booking(runtime, booking_id)
    changes: dict[str, Any] = {"payment_status": PaymentStatus.REFUNDED, "cancelled_at": clock.now()}
    if reason:
        changes["notes"] = reason
    return await _locked_transition(runtime, booking.id, booking.event_id, BookingStatus.REFUNDED, actor, **changes)


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
        .where(Booking.status == BookingStatus.PENDING, Booking.expires_at <= clock.now())
        .with_only_columns(Booking.id, Booking.event_id)
    )
    async with reader() as session:
        rows = (await session.execute(lapsed.limit(most))).all()
    for booking_id, event_id in rows:
        await expire_booking(runtime, booking_id, event_id)
    return len(rows)
