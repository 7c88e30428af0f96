"""The waitlist: joining, leaving, booking from an offer, and admin changes (SPEC section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import (
    AlreadyWaitlistedError,
    NotFoundError,
    OfferNotAvailableError,
    SeatsAvailableError,
)
from app.core.security import Principal
from app.db.queries import get_owned, paginate, where_equal
from app.models.booking import Booking
from app.models.enums import WaitlistStatus
from app.models.waitlist import WaitlistEntry
from app.runtime import Runtime
from app.schemas.waitlist import WaitlistAdminUpdate, WaitlistEntryRead, WaitlistJoin
from app.services import admission, buyer_limit, idempotency
from app.services.audit import Actor
from app.services.booking_rows import booking_amount
from app.services.bookings import book_held_seats, check_quantity
from app.services.changes import move, refuse_if_lapsed
from app.services.lifecycles import WAITLIST, describe_entry
from app.services.seats import check_sales_open, get_event
from app.services.unit_of_work import UnitOfWork

DEFAULT_PRIORITY = 100


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

    async def operation(uow: UnitOfWork) -> WaitlistEntryRead:
        event = await get_event(uow.session, data.event_id)
        check_sales_open(event)
        admission.require(event, principal.user_id, admission_pass, uow.now)
        booking_amount(event, data.quantity)  # refused now if its booking could not store the amount
        await buyer_limit.check(uow.session, event, principal.user_id, data.quantity)
        if event.available_capacity >= data.quantity:
            raise SeatsAvailableError(f"{event.available_capacity} seats are available: book them instead")
        entry = WaitlistEntry(
            user_id=principal.user_id,
            event_id=data.event_id,
            quantity=data.quantity,
            priority=DEFAULT_PRIORITY,
            joined_at=uow.now,
            created_at=uow.now,
        )
        rule = WAITLIST.create(uow, entry, "join")
        try:
            await uow.session.flush()
        except IntegrityError as exc:
            raise AlreadyWaitlistedError("You already wait for this event") from exc
        WAITLIST.record(uow, rule, entry, Actor.of(principal), None, describe_entry(entry))
        joined = WaitlistEntryRead.model_validate(entry).model_copy(
            update={"position": await position(uow.session, entry)}
        )
        uow.answer(claim, 201, joined.model_dump(mode="json"))
        return joined

    return await runtime.transactions.locked(data.event_id, operation)


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


async def cancel(runtime: Runtime, actor: Actor, entry_id: int, owner_id: int | None) -> WaitlistEntry:
    """Leave the line; a live offer's seats go to the next in line at once."""
    event_id = await _event_of(runtime, entry_id, owner_id)

    async def operation(uow: UnitOfWork) -> WaitlistEntry:
        entry = await _load(uow.session, entry_id, owner_id)
        await refuse_if_lapsed(uow, WAITLIST, entry, WAITLIST.refusal("cancel", "The offer has lapsed"))
        await move(uow, WAITLIST, entry, "cancel", actor)
        return entry

    return await runtime.transactions.locked(event_id, operation)


async def book_offer(runtime: Runtime, principal: Principal, entry_id: int, claim: idempotency.Claim | None) -> Booking:
    """Turn a live offer into a pending booking; the offered seats stay reserved for it."""
    event_id = await _event_of(runtime, entry_id, principal.user_id)

    async def operation(uow: UnitOfWork) -> Booking:
        entry = await _load(uow.session, entry_id, principal.user_id)
        await refuse_if_lapsed(uow, WAITLIST, entry, OfferNotAvailableError("The offer has lapsed"))
        if WAITLIST.find("book", entry.status) is None:
            raise OfferNotAvailableError(f"This entry is {entry.status.value}, it has no live offer")
        actor = Actor.of(principal)
        booking = await book_held_seats(
            uow, actor, principal.user_id, entry.event_id, entry.quantity, claim, waitlist_entry_id=entry.id
        )
        await move(uow, WAITLIST, entry, "book", actor, booked_at=uow.now, booking_id=booking.id)
        return booking

    return await runtime.transactions.locked(event_id, operation)


async def admin_update(runtime: Runtime, actor: Actor, entry_id: int, change: WaitlistAdminUpdate) -> WaitlistEntry:
    """An admin removes an entry, or gives it a new priority (the model asks for one of the two)."""
    if change.remove:
        return await cancel(runtime, actor, entry_id, None)
    assert change.priority is not None
    return await set_priority(runtime, actor, entry_id, change.priority, change.reason)


async def set_priority(
    runtime: Runtime, actor: Actor, entry_id: int, priority: int, reason: str | None
) -> WaitlistEntry:
    """Not a change of status: the entry keeps its state, and moves in the line."""
    event_id = await _event_of(runtime, entry_id, None)

    async def operation(uow: UnitOfWork) -> WaitlistEntry:
        entry = await _load(uow.session, entry_id, None)
        before = describe_entry(entry)
        entry.priority, entry.updated_at = priority, uow.now
        await uow.session.flush()
        after = dict(describe_entry(entry), reason=reason)
        uow.audit(actor, "waitlist.priority_changed", WAITLIST.entity_type, entry.id, before, after)
        return entry

    return await runtime.transactions.locked(event_id, operation)


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
