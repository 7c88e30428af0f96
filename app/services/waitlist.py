"""The waitlist: joining, leaving, booking from an offer, and admin changes (SPEC section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import clock
from app.core.errors import (
    AlreadyWaitlistedError,
    BadRequestError,
    NotFoundError,
    OfferNotAvailableError,
    SalesClosedError,
    SeatsAvailableError,
    WaitlistNotCancellableError,
)
from app.core.security import Principal
from app.db.queries import get_owned, paginate, where_equal
from app.models.booking import Booking
from app.models.enums import WaitlistStatus
from app.models.waitlist import WaitlistEntry
from app.schemas.waitlist import WaitlistAdminUpdate, WaitlistEntryRead, WaitlistJoin
from app.services import admission, audit, buyer_limit, idempotency, outbox
from app.services.audit import Actor
from app.services.booking_batcher import booking_amount
from app.services.bookings import book_held_seats, booking_data, check_quantity
from app.services.capacity import get_event, run_locked, shift_seats
from app.services.runtime import Runtime
from app.services.waitlist_offers import entry_data, offer_freed_seats

DEFAULT_PRIORITY = 100
LIVE = (WaitlistStatus.PENDING, WaitlistStatus.NOTIFIED)


async def join(
    runtime: Runtime,
    principal: Principal,
    data: WaitlistJoin,
    claim: idempotency.Claim | None,
    admission_token: str | None = None,
) -> WaitlistEntryRead:
    """Join the line; the answer carries the entry's position."""
    check_quantity(runtime, data.quantity)
    admission_pass = admission.read(runtime.settings, admission_token)

    async def operation(session: AsyncSession) -> WaitlistEntryRead:
        now = clock.now()
        event = await get_event(session, data.event_id)
        if not event.sales_open:
            raise SalesClosedError(f"Sales for event {data.event_id} are closed")
        admission.require(event, principal.user_id, admission_pass, now)
        booking_amount(event, data.quantity)  # refused now if its booking could not store the amount
        await buyer_limit.check(session, event, principal.user_id, data.quantity, now)
        if event.available_capacity >= data.quantity:
            raise SeatsAvailableError(f"{event.available_capacity} seats are available: book them instead")
        entry = WaitlistEntry(
            user_id=principal.user_id,
            event_id=data.event_id,
            quantity=data.quantity,
            priority=DEFAULT_PRIORITY,
            status=WaitlistStatus.PENDING,
            joined_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(entry)
        try:
            await session.flush()
        except IntegrityError as exc:
            raise AlreadyWaitlistedError("You already wait for this event") from exc
        after = entry_data(entry)
        await audit.record(
            session,
            audit.audit_row(Actor.of(principal), "waitlist.joined", "waitlist_entry", entry.id, now, after=after),
        )
        await outbox.enqueue(session, now, outbox.waitlist_message("WaitlistJoined", entry, now))
        joined = WaitlistEntryRead.model_validate(entry).model_copy(update={"position": await position(session, entry)})
        await idempotency.store_in(session, claim, 201, joined.model_dump(mode="json"))
        return joined

    return await run_locked(runtime, data.event_id, operation)


async def position(session: AsyncSession, entry: WaitlistEntry) -> int | None:
    """1-based place among the event's pending entries, or None when not pending."""
    if entry.status is not WaitlistStatus.PENDING:
        return None
    ahead = await session.scalar(
        select(func.count())
        .select_from(WaitlistEntry)
        .where(
            WaitlistEntry.event_id == entry.event_id,
            WaitlistEntry.status == WaitlistStatus.PENDING,
            or_(
                WaitlistEntry.priority < entry.priority,
                and_(WaitlistEntry.priority == entry.priority, WaitlistEntry.joined_at < entry.joined_at),
                and_(
                    WaitlistEntry.priority == entry.priority,
                    WaitlistEntry.joined_at == entry.joined_at,
                    WaitlistEntry.id < entry.id,
                ),
            ),
        )
    )
    return (ahead or 0) + 1


async def _load(session: AsyncSession, entry_id: int, owner_id: int | None) -> WaitlistEntry:
    entry = await get_owned(session, WaitlistEntry, entry_id, owner_id)
    if entry is None:
        raise NotFoundError(f"Waitlist entry {entry_id} not found")
    return entry


async def _event_of(runtime: Runtime, entry_id: int, owner_id: int | None) -> int:
    async with runtime.sessionmaker() as session:
        return (await _load(session, entry_id, owner_id)).event_id


async def end_entry(
    session: AsyncSession,
    runtime: Runtime,
    entry: WaitlistEntry,
    status: WaitlistStatus,
    actor: Actor,
    now: datetime,
) -> WaitlistEntry:
    """Cancel or expire an entry; a live offer's seats go to the next in line at once."""
    if entry.status not in LIVE:
        raise WaitlistNotCancellableError(f"A {entry.status.value} entry cannot be {status.value}")
    held = entry.quantity if entry.status is WaitlistStatus.NOTIFIED else 0
    before = entry_data(entry)
    entry.status, entry.updated_at = status, now
    await session.flush()
    after = entry_data(entry)
    message = "WaitlistExpired" if status is WaitlistStatus.EXPIRED else "WaitlistCancelled"
    await audit.record(
        session, audit.audit_row(actor, f"waitlist.{status.value}", "waitlist_entry", entry.id, now, before, after)
    )
    await outbox.enqueue(session, now, outbox.waitlist_message(message, entry, now))
    if held:
        await shift_seats(session, entry.event_id, available=held, reserved=-held)
        await offer_freed_seats(session, runtime.settings, entry.event_id, now)
    return entry


async def cancel(runtime: Runtime, actor: Actor, entry_id: int, owner_id: int | None) -> WaitlistEntry:
    event_id = await _event_of(runtime, entry_id, owner_id)

    async def operation(session: AsyncSession) -> WaitlistEntry:
        entry = await _load(session, entry_id, owner_id)
        return await end_entry(session, runtime, entry, WaitlistStatus.CANCELLED, actor, clock.now())

    return await run_locked(runtime, event_id, operation)


async def expire_offer(session: AsyncSession, runtime: Runtime, entry: WaitlistEntry, now: datetime) -> None:
    if entry.status is WaitlistStatus.NOTIFIED and entry.is_notification_expired:
        await end_entry(session, runtime, entry, WaitlistStatus.EXPIRED, Actor.system(), now)


async def book_offer(runtime: Runtime, principal: Principal, entry_id: int, claim: idempotency.Claim | None) -> Booking:
    """Turn a live offer into a pending booking; the offered seats stay reserved for it."""
    event_id = await _event_of(runtime, entry_id, principal.user_id)
    expired = False

    async def operation(session: AsyncSession) -> Booking | None:
        nonlocal expired
        now = clock.now()
        entry = await _load(session, entry_id, principal.user_id)
        if entry.status is WaitlistStatus.NOTIFIED and entry.is_notification_expired:
            await end_entry(session, runtime, entry, WaitlistStatus.EXPIRED, Actor.system(), now)
            expired = True
            return None
        if entry.status is not WaitlistStatus.NOTIFIED:
            raise OfferNotAvailableError(f"This entry is {entry.status.value}, it has no live offer")
        return await _book_entry(session, runtime, principal, entry, now, claim)

    booking = await run_locked(runtime, event_id, operation)
    if booking is None or expired:
        raise OfferNotAvailableError("The offer has lapsed")
    return booking


async def _book_entry(
    session: AsyncSession,
    runtime: Runtime,
    principal: Principal,
    entry: WaitlistEntry,
    now: datetime,
    claim: idempotency.Claim | None,
) -> Booking:
    booking = await book_held_seats(
        session, runtime, principal.user_id, entry.event_id, entry.quantity, now, waitlist_entry_id=entry.id
    )
    before = entry_data(entry)
    entry.status, entry.booked_at, entry.booking_id, entry.updated_at = (
        WaitlistStatus.BOOKED,
        now,
        booking.id,
        now,
    )
    await session.flush()
    created, booked = booking_data(booking), entry_data(entry)
    actor = Actor.of(principal)
    await audit.record(
        session,
        audit.audit_row(actor, "booking.created", "booking", booking.id, now, after=created),
        audit.audit_row(actor, "waitlist.booked", "waitlist_entry", entry.id, now, before, booked),
    )
    await outbox.enqueue(
        session,
        now,
        outbox.booking_message("BookingCreated", booking, now),
        outbox.waitlist_message("WaitlistBooked", entry, now),
    )
    await idempotency.store_in(session, claim, 201, created)
    return booking


async def admin_update(runtime: Runtime, actor: Actor, entry_id: int, change: WaitlistAdminUpdate) -> WaitlistEntry:
    """An admin removes an entry, or gives it a new priority."""
    if change.remove:
        return await cancel(runtime, actor, entry_id, None)
    if change.priority is None:
        raise BadRequestError("Give a new priority, or remove=true")
    return await set_priority(runtime, actor, entry_id, change.priority, change.reason)


async def set_priority(
    runtime: Runtime, actor: Actor, entry_id: int, priority: int, reason: str | None
) -> WaitlistEntry:
    event_id = await _event_of(runtime, entry_id, None)

    async def operation(session: AsyncSession) -> WaitlistEntry:
        now = clock.now()
        entry = await _load(session, entry_id, None)
        before = entry_data(entry)
        entry.priority, entry.updated_at = priority, now
        await session.flush()
        after = dict(entry_data(entry), reason=reason)
        await audit.record(
            session, audit.audit_row(actor, "waitlist.priority_changed", "waitlist_entry", entry.id, now, before, after)
        )
        return entry

    return await run_locked(runtime, event_id, operation)


@dataclass(frozen=True, slots=True)
class WaitlistFilter:
    user_id: int | None = None
    event_id: int | None = None
    status: WaitlistStatus | None = None


def _filtered(query: Select[Any], flt: WaitlistFilter) -> Select[Any]:
    return where_equal(
        query,
        {WaitlistEntry.user_id: flt.user_id, WaitlistEntry.event_id: flt.event_id, WaitlistEntry.status: flt.status},
    )


async def list_entries(
    session: AsyncSession, flt: WaitlistFilter, limit: int, offset: int
) -> tuple[list[tuple[WaitlistEntry, int | None]], int]:
    query = _filtered(select(WaitlistEntry), flt).order_by(
        WaitlistEntry.event_id, WaitlistEntry.priority, WaitlistEntry.joined_at, WaitlistEntry.id
    )
    rows, total = await paginate(session, query, limit, offset)
    return [(entry, await position(session, entry)) for entry in rows], total
