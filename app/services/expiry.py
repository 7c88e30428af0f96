"""Expiry of lapsed holds, offers and pending bookings, and completion of past events' bookings.

Each event's due rows are changed under its lock in one transaction, picked with `FOR UPDATE SKIP
LOCKED`, so several instances share the work without doing any of it twice. The sweeper runs this
in the background (app/services/sweeper.py); reads and the booking batch run it on the spot.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func, select, union, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import metrics
from app.models.booking import Booking
from app.models.enums import BookingStatus
from app.models.event_availability import EventAvailability
from app.models.reservation import Reservation
from app.models.waitlist import WaitlistEntry
from app.services.changes import SYSTEM, expire, move
from app.services.lifecycles import BOOKING, RESERVATION, WAITLIST
from app.services.state_machine import StateMachine
from app.services.unit_of_work import Transactions, UnitOfWork

LAPSING = (Booking, Reservation, WaitlistEntry)
M = TypeVar("M", Booking, Reservation, WaitlistEntry)


async def events_with_due_work(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    """Events with a lapsed row, or a confirmed booking of an event that has ended."""
    due = union(
        *(select(model.event_id).where(model.lapsed) for model in LAPSING),
        select(Booking.event_id)
        .join(EventAvailability, EventAvailability.event_id == Booking.event_id)
        .where(Booking.status == BookingStatus.CONFIRMED, EventAvailability.ends_at <= now),
    ).subquery()
    return list(await session.scalars(select(due.c.event_id).limit(limit)))


async def events_with_due_holds(session: AsyncSession, event_ids: Collection[int]) -> set[int]:
    """Which of these events have a lapsed hold (pending booking, temporary hold or offer)."""
    due = union(*(select(model.event_id).where(model.event_id.in_(event_ids), model.lapsed) for model in LAPSING))
    return set(await session.scalars(due))


async def next_hold_expiry(session: AsyncSession, event_id: int) -> datetime | None:
    """When the event's next live hold (pending booking, temporary hold, offer) lapses."""
    expiries = union_all(
        *(
            select(func.min(model.expires_at)).where(model.event_id == event_id, model.status == model.LAPSING_STATUS)
            for model in LAPSING
        )
    ).subquery()
    earliest: datetime | None = await session.scalar(select(func.min(expiries.c[0])))
    return earliest


async def release_lapsed_holds(transactions: Transactions, event_ids: Collection[int]) -> int:
    """Expire the events' lapsed holds now, if they have any; returns how many were expired."""
    due = await transactions.read(lambda session: events_with_due_holds(session, event_ids))
    return await expire_due_for_events(transactions, due)


async def expire_due_for_events(transactions: Transactions, event_ids: Collection[int]) -> int:
    """Expire the due holds of these events, one event at a time in event order; returns how many."""
    return sum([await expire_due_for_event(transactions, event_id) for event_id in sorted(event_ids)])


async def expire_due_for_event(transactions: Transactions, event_id: int) -> int:
    """Expire every due hold, offer and pending booking of one event, and complete its bookings if
    it has ended; returns how many rows changed."""

    async def operation(uow: UnitOfWork) -> int:
        done = await _expire_due(uow, RESERVATION, Reservation, event_id, "reservation")
        done += await _expire_due(uow, WAITLIST, WaitlistEntry, event_id, "waitlist_offer")
        done += await _expire_due(uow, BOOKING, Booking, event_id, "booking")
        return done + await _complete_past(uow, event_id)

    return await transactions.locked(event_id, operation)


async def _expire_due(uow: UnitOfWork, machine: StateMachine[M, Any], model: type[M], event_id: int, label: str) -> int:
    due = await uow.session.scalars(
        select(model)
        .where(model.event_id == event_id, model.lapsed)
        .order_by(model.expires_at)
        .limit(uow.settings.sweep_batch_size)
        .with_for_update(skip_locked=True)
    )
    done = 0
    for row in list(due):
        await expire(uow, machine, row)
        metrics.EXPIRED_BY_SWEEPER.labels(label).inc()
        done += 1
    return done


async def _complete_past(uow: UnitOfWork, event_id: int) -> int:
    ended = await uow.session.scalar(select(EventAvailability.ends_at).where(EventAvailability.event_id == event_id))
    if ended is None or ended > uow.now:
        return 0
    confirmed = await uow.session.scalars(
        select(Booking)
        .where(Booking.event_id == event_id, Booking.status == BookingStatus.CONFIRMED)
        .limit(uow.settings.sweep_batch_size)
        .with_for_update(skip_locked=True)
    )
    done = 0
    for booking in list(confirmed):
        await move(uow, BOOKING, booking, "complete", SYSTEM)
        metrics.EXPIRED_BY_SWEEPER.labels("completed").inc()
        done += 1
    return done
