"""Event availability: reads (expiry applied first), admin changes, and the overview."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import UnaryExpression, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import clock
from app.core.errors import CapacityBelowHeldError
from app.models.booking import Booking
from app.models.enums import WaitlistStatus
from app.models.event_availability import EventAvailability
from app.models.waitlist import WaitlistEntry
from app.runtime import Runtime
from app.schemas.availability import EventAvailabilityRead, EventAvailabilityUpsert
from app.services import expiry, outbox
from app.services.audit import Actor
from app.services.availability_cache import NEVER
from app.services.seats import get_event, snapshot
from app.services.unit_of_work import UnitOfWork
from app.services.waitlist_offers import offer_freed_seats


async def get_availability(runtime: Runtime, event_id: int) -> EventAvailabilityRead:
    """The event's figures, from the cache when it can vouch that no hold has lapsed since.

    Otherwise from PostgreSQL: holds already due are expired first (never shown live), and the
    cache is refreshed with the next moment a hold will lapse.
    """
    now = clock.now()
    cached = await runtime.cache.load(event_id, now)
    if cached is not None:
        return EventAvailabilityRead.model_validate(cached)
    async with runtime.sessionmaker() as session:
        await get_event(session, event_id)  # 404 for an unknown event
        if await expiry.events_with_due_holds(session, [event_id]):
            await expiry.expire_due_for_event(runtime.transactions, event_id)
    async with runtime.sessionmaker() as session:
        event = await get_event(session, event_id)
        next_lapse = await expiry.next_hold_expiry(session, event_id)
    figures = EventAvailabilityRead.model_validate(event)
    await runtime.cache.store(figures.model_dump(mode="json"), next_lapse or NEVER, reset=True)
    return figures


async def upsert(runtime: Runtime, actor: Actor, event_id: int, data: EventAvailabilityUpsert) -> EventAvailability:
    """Create the event's availability, or change it; capacity never drops below seats held."""

    async def operation(uow: UnitOfWork) -> EventAvailability:
        event = await uow.session.scalar(
            select(EventAvailability).where(EventAvailability.event_id == event_id).with_for_update(key_share=True)
        )
        if event is None:
            event = EventAvailability(
                event_id=event_id,
                available_capacity=data.total_capacity,
                reserved_capacity=0,
                confirmed_capacity=0,
                version=1,
                **data.model_dump(),
            )
            uow.session.add(event)
            before = None
            freed = 0
        else:
            before = snapshot(event)
            freed = apply_changes(event, data.model_dump())
            event.version += 1
        event.last_updated = uow.now
        action = "availability.updated" if before else "availability.created"
        return await record_change(uow, actor, action, event, before, freed)

    return await runtime.transactions.locked(event_id, operation)


async def record_change(
    uow: UnitOfWork, actor: Actor, action: str, event: EventAvailability, before: dict[str, Any] | None, freed: int
) -> EventAvailability:
    """An event's figures changed by an admin or the events service: audited, announced, and any
    seats added offered to the waitlist first."""
    await uow.session.flush()
    await uow.session.refresh(event)
    uow.audit(actor, action, "event_availability", event.event_id, before, snapshot(event))
    if freed > 0:
        await offer_freed_seats(uow, event.event_id)
        await uow.session.refresh(event)
    uow.moved(event)
    uow.publish(outbox.availability_message(event, uow.now))
    return event


def apply_changes(event: EventAvailability, changes: dict[str, Any]) -> int:
    """Apply new figures to a locked row; returns the seats added to `available`."""
    held = event.reserved_capacity + event.confirmed_capacity
    total: int | None = changes.pop("total_capacity", None)
    for name, value in changes.items():
        setattr(event, name, value)
    if total is None or total == event.total_capacity:
        return 0
    if total < held:
        raise CapacityBelowHeldError(f"Capacity {total} is below the {held} seats already held or sold")
    delta = total - event.total_capacity
    event.total_capacity = total
    event.available_capacity += delta
    return delta


@dataclass(frozen=True, slots=True)
class EventOverview:
    event: EventAvailability
    bookings_by_status: dict[str, int]
    waitlist_length: int


OVERVIEW_SORTS: dict[str, UnaryExpression[Any]] = {
    "-utilization": (
        (EventAvailability.reserved_capacity + EventAvailability.confirmed_capacity)
        * 1.0
        / func.nullif(EventAvailability.total_capacity, 0)
    )
    .desc()
    .nulls_last(),
    "utilization": (
        (EventAvailability.reserved_capacity + EventAvailability.confirmed_capacity)
        * 1.0
        / func.nullif(EventAvailability.total_capacity, 0)
    )
    .asc()
    .nulls_first(),
    "event_id": EventAvailability.event_id.asc(),
}


async def overview(runtime: Runtime, limit: int, offset: int, sort: str) -> tuple[list[EventOverview], int]:
    """A page of events with their bookings by status and waitlist length. Lapsed holds of the
    page's events are expired first (expiry on read): no figure counts them as live. Read from the
    replicas; when something was expired, read again from the primary (a replica may lag)."""
    async with runtime.read_sessionmaker() as session:
        page, total = await _overview_page(session, limit, offset, sort)
        due = await expiry.events_with_due_holds(session, [row.event.event_id for row in page])
    if not due:
        return page, total
    await expiry.expire_due_for_events(runtime.transactions, due)
    async with runtime.sessionmaker() as session:
        return await _overview_page(session, limit, offset, sort)


async def _overview_page(session: AsyncSession, limit: int, offset: int, sort: str) -> tuple[list[EventOverview], int]:
    total = await session.scalar(select(func.count()).select_from(EventAvailability))
    events = list(
        await session.scalars(
            select(EventAvailability)
            .order_by(OVERVIEW_SORTS[sort], EventAvailability.event_id)
            .limit(limit)
            .offset(offset)
        )
    )
    ids = [e.event_id for e in events]
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    for event_id, status, count in await session.execute(
        select(Booking.event_id, Booking.status, func.count())
        .where(Booking.event_id.in_(ids))
        .group_by(Booking.event_id, Booking.status)
    ):
        counts[event_id][status.value] = count
    waiting: dict[int, int] = {}
    for event_id, length in await session.execute(
        select(WaitlistEntry.event_id, func.count())
        .where(WaitlistEntry.event_id.in_(ids), WaitlistEntry.status == WaitlistStatus.PENDING)
        .group_by(WaitlistEntry.event_id)
    ):
        waiting[event_id] = length
    return [EventOverview(e, counts[e.event_id], waiting.get(e.event_id, 0)) for e in events], total or 0
