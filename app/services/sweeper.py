"""Expiry of holds, offers and pending bookings, and completion of past events' bookings.

Runs in every instance. Each event's due rows are handled under its lock in one transaction,
picked with `FOR UPDATE SKIP LOCKED`, so several instances share the work without doing any of
it twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import func, select, union, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import metrics
from app.core.clock import clock
from app.core.errors import AppError
from app.core.logging import get_logger
from app.models.booking import Booking
from app.models.enums import BookingStatus, ReservationStatus, WaitlistStatus
from app.models.event_availability import EventAvailability
from app.models.reservation import Reservation
from app.models.waitlist import WaitlistEntry
from app.services import bookings, idempotency, reservations, waitlist
from app.services.audit import Actor
from app.services.capacity import run_locked
from app.services.runtime import Runtime

log = get_logger(__name__)


async def events_with_due_work(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    due = union(
        select(Booking.event_id).where(Booking.status == BookingStatus.PENDING, Booking.expires_at <= now),
        select(Reservation.event_id).where(
            Reservation.status == ReservationStatus.ACTIVE, Reservation.expires_at <= now
        ),
        select(WaitlistEntry.event_id).where(
            WaitlistEntry.status == WaitlistStatus.NOTIFIED, WaitlistEntry.expires_at <= now
        ),
        select(Booking.event_id)
        .join(EventAvailability, EventAvailability.event_id == Booking.event_id)
        .where(Booking.status == BookingStatus.CONFIRMED, EventAvailability.ends_at <= now),
    ).subquery()
    return list(await session.scalars(select(due.c.event_id).limit(limit)))


async def events_with_due_holds(session: AsyncSession, event_ids: Collection[int], now: datetime) -> set[int]:
    """Which of these events have a lapsed hold (pending booking, temporary hold or offer)."""
    due = union(
        select(Booking.event_id).where(
            Booking.event_id.in_(event_ids), Booking.status == BookingStatus.PENDING, Booking.expires_at <= now
        ),
        select(Reservation.event_id).where(
            Reservation.event_id.in_(event_ids),
            Reservation.status == ReservationStatus.ACTIVE,
            Reservation.expires_at <= now,
        ),
        select(WaitlistEntry.event_id).where(
            WaitlistEntry.event_id.in_(event_ids),
            WaitlistEntry.status == WaitlistStatus.NOTIFIED,
            WaitlistEntry.expires_at <= now,
        ),
    )
    return set(await session.scalars(due))


async def next_hold_expiry(session: AsyncSession, event_id: int) -> datetime | None:
    """When the event's next live hold (pending booking, temporary hold, offer) lapses."""
    expiries = union_all(
        select(func.min(Booking.expires_at)).where(
            Booking.event_id == event_id, Booking.status == BookingStatus.PENDING
        ),
        select(func.min(Reservation.expires_at)).where(
            Reservation.event_id == event_id, Reservation.status == ReservationStatus.ACTIVE
        ),
        select(func.min(WaitlistEntry.expires_at)).where(
            WaitlistEntry.event_id == event_id, WaitlistEntry.status == WaitlistStatus.NOTIFIED
        ),
    ).subquery()
    earliest: datetime | None = await session.scalar(select(func.min(expiries.c[0])))
    return earliest


async def release_lapsed_holds(runtime: Runtime, event_ids: Collection[int]) -> int:
    """Expire the events' lapsed holds now, if they have any; returns how many were expired."""
    async with runtime.sessionmaker() as session:
        due = await events_with_due_holds(session, event_ids, clock.now())
    return await expire_due_for_events(runtime, due)


async def expire_due_for_events(runtime: Runtime, event_ids: Collection[int]) -> int:
    """Expire the due holds of these events, one event at a time in event order; returns how many."""
    return sum([await expire_due_for_event(runtime, event_id) for event_id in sorted(event_ids)])


async def expire_due_for_event(runtime: Runtime, event_id: int) -> int:
    """Expire every due hold, offer and pending booking of one event; returns how many."""
    limit = runtime.settings.sweep_batch_size

    async def operation(session: AsyncSession) -> int:
        now = clock.now()
        holds = await session.scalars(
            select(Reservation)
            .where(
                Reservation.event_id == event_id,
                Reservation.status == ReservationStatus.ACTIVE,
                Reservation.expires_at <= now,
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        done = 0
        for hold in list(holds):
            await reservations.expire_reservation(session, runtime, hold, now)
            metrics.EXPIRED_BY_SWEEPER.labels("reservation").inc()
            done += 1
        offers = await session.scalars(
            select(WaitlistEntry)
            .where(
                WaitlistEntry.event_id == event_id,
                WaitlistEntry.status == WaitlistStatus.NOTIFIED,
                WaitlistEntry.expires_at <= now,
            )
            .order_by(WaitlistEntry.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        for entry in list(offers):
            await waitlist.expire_offer(session, runtime, entry, now)
            metrics.EXPIRED_BY_SWEEPER.labels("waitlist_offer").inc()
            done += 1
        pending = await session.scalars(
            select(Booking)
            .where(Booking.event_id == event_id, Booking.status == BookingStatus.PENDING, Booking.expires_at <= now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        for booking in list(pending):
            await bookings.transition(session, runtime, booking, BookingStatus.EXPIRED, Actor.system(), now)
            metrics.EXPIRED_BY_SWEEPER.labels("booking").inc()
            done += 1
        return done + await _complete_past(session, runtime, event_id, now, limit)

    return await run_locked(runtime, event_id, operation)


async def _complete_past(session: AsyncSession, runtime: Runtime, event_id: int, now: datetime, limit: int) -> int:
    ended = await session.scalar(select(EventAvailability.ends_at).where(EventAvailability.event_id == event_id))
    if ended is None or ended > now:
        return 0
    confirmed = await session.scalars(
        select(Booking)
        .where(Booking.event_id == event_id, Booking.status == BookingStatus.CONFIRMED)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    done = 0
    for booking in list(confirmed):
        await bookings.transition(session, runtime, booking, BookingStatus.COMPLETED, Actor.system(), now)
        metrics.EXPIRED_BY_SWEEPER.labels("completed").inc()
        done += 1
    return done


async def sweep_once(runtime: Runtime) -> int:
    now = clock.now()
    async with runtime.sessionmaker() as session:
        event_ids = await events_with_due_work(session, now, runtime.settings.sweep_batch_size)
    done = 0
    for event_id in event_ids:
        done += await expire_due_for_event(runtime, event_id)
    async with runtime.sessionmaker() as session, session.begin():
        await idempotency.purge_expired(session, now)
    return done


async def run_sweeper(runtime: Runtime) -> None:
    """The background loop; errors are logged and the next pass tries again."""
    while True:
        try:
            await sweep_once(runtime)
        except asyncio.CancelledError:
            raise
        except AppError as exc:  # an event busy, a conflict: the next pass tries again
            log.warning("sweeper_pass_incomplete", code=exc.code)
        except Exception:
            log.exception("sweeper_pass_failed")
        await asyncio.sleep(runtime.settings.sweep_interval_seconds)
