"""Moves of seats between available, reserved and confirmed (SPEC sections 1 and 2).

Every move is one relative `UPDATE` of the event's row; the table's CHECK constraints keep the
invariant whatever happens. Taking seats from `available` is also version-checked: a stale
version raises `StaleVersion`, and `run_locked` retries the whole transaction with jittered
backoff a bounded number of times before answering 409 `version_conflict`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from app.core import metrics
from app.core.errors import InsufficientCapacityError, NotFoundError, SalesClosedError, VersionConflictError
from app.models.event_availability import EventAvailability
from app.schemas.availability import EventAvailabilityRead
from app.services.runtime import Runtime

T = TypeVar("T")


class StaleVersion(Exception):
    """The event row changed since it was read; the transaction is retried."""


def snapshot(event: EventAvailability) -> dict[str, Any]:
    return EventAvailabilityRead.model_validate(event).model_dump(mode="json")


async def get_event(session: AsyncSession, event_id: int, *, for_update: bool = False) -> EventAvailability:
    query = select(EventAvailability).where(EventAvailability.event_id == event_id)
    if for_update:
        query = query.with_for_update(key_share=True)
    event = await session.scalar(query.execution_options(populate_existing=True))
    if event is None:
        raise NotFoundError(f"Event {event_id} has no availability")
    return event


async def take_seats(
    session: AsyncSession,
    event_id: int,
    quantity: int,
    *,
    gate: Callable[[EventAvailability], Awaitable[None]] | None = None,
) -> EventAvailability:
    """Hold `quantity` open seats (available -> reserved), checked against the row's version.
    `gate`, when given, may refuse the request on the event's current row first."""
    event = await get_event(session, event_id)
    if not event.sales_open:
        raise SalesClosedError(f"Sales for event {event_id} are closed")
    if gate is not None:
        await gate(event)
    if event.available_capacity < quantity:
        raise InsufficientCapacityError(event.available_capacity)
    updated = await session.scalar(
        update(EventAvailability)
        .where(
            EventAvailability.event_id == event_id,
            EventAvailability.version == event.version,
            EventAvailability.available_capacity >= quantity,
        )
        .values(
            available_capacity=EventAvailability.available_capacity - quantity,
            reserved_capacity=EventAvailability.reserved_capacity + quantity,
            version=EventAvailability.version + 1,
        )
        .returning(EventAvailability)
        .execution_options(populate_existing=True)
    )
    if updated is None:
        raise StaleVersion()
    remember_event(session, updated)
    return updated


def remember_event(session: AsyncSession, event: EventAvailability) -> None:
    """Keep the event's latest figures for after the commit (cache, live streams)."""
    session.info.setdefault("events", {})[event.event_id] = event


async def shift_seats(
    session: AsyncSession,
    event_id: int,
    *,
    available: int = 0,
    reserved: int = 0,
    confirmed: int = 0,
) -> EventAvailability:
    """Move seats between the counters; the deltas must add up to zero."""
    if available + reserved + confirmed != 0:
        raise ValueError("seat moves must keep the total")
    updated = await session.scalar(
        update(EventAvailability)
        .where(EventAvailability.event_id == event_id)
        .values(
            available_capacity=EventAvailability.available_capacity + available,
            reserved_capacity=EventAvailability.reserved_capacity + reserved,
            confirmed_capacity=EventAvailability.confirmed_capacity + confirmed,
            version=EventAvailability.version + 1,
        )
        .returning(EventAvailability)
        .execution_options(populate_existing=True)
    )
    if updated is None:
        raise NotFoundError(f"Event {event_id} has no availability")
    remember_event(session, updated)
    return updated


async def run_locked(
    runtime: Runtime,
    event_ids: int | Sequence[int],
    operation: Callable[[AsyncSession], Awaitable[T]],
    *,
    rows_first: bool = True,
) -> T:
    """Run `operation` in one transaction under the events' locks, retrying stale versions.

    With `rows_first` the transaction starts by locking the events' rows in event order, before
    touching any booking, hold or waitlist row. Every writer taking its rows in that one order is
    what keeps PostgreSQL free of deadlocks when the Redis lock is not there to serialise them
    (Redis down, or one instance's breaker open while another's is closed).
    """
    settings = runtime.settings
    ids = sorted({event_ids} if isinstance(event_ids, int) else set(event_ids))

    async def locked_operation(session: AsyncSession) -> T:
        if rows_first:
            await session.execute(
                select(EventAvailability.event_id)
                .where(EventAvailability.event_id.in_(ids))
                .order_by(EventAvailability.event_id)
                # FOR NO KEY UPDATE: it excludes the other writers of the row all the same, but not the
                # key-share lock a booking's INSERT takes on its event (its foreign key), so booking a
                # hold, which takes no event lock, never waits on a writer that waits on it.
                .with_for_update(key_share=True)
            )
        return await operation(session)

    async with runtime.sessionmaker() as session:
        async with runtime.locks.hold(ids):
            result = await _with_retries(session, settings.version_conflict_retries, locked_operation)
        # After the lock: the cache compares versions, so the order writers get here in is harmless.
        await runtime.after_commit(session)
    return result


async def run_in_transaction(runtime: Runtime, operation: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `operation` in one transaction that moves no seats: no event lock, no event row lock
    (SPEC section 2 asks them of capacity changes only), so it never queues behind an event's
    bookings. It locks the rows it changes itself, and only those: holding no other lock while it
    waits, it cannot take part in a deadlock."""
    async with runtime.sessionmaker() as session:
        result = await _with_retries(session, runtime.settings.version_conflict_retries, operation)
        await runtime.after_commit(session)
    return result


async def _with_retries(session: AsyncSession, retries: int, operation: Callable[[AsyncSession], Awaitable[T]]) -> T:
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(retries + 1),
            wait=wait_random_exponential(multiplier=0.005, max=0.1),
            retry=retry_if_exception(_is_transient),
            before_sleep=lambda _state: metrics.VERSION_CONFLICT_RETRIES.inc(),
            reraise=True,
        ):
            with attempt:
                session.info.clear()
                async with session.begin():
                    return await operation(session)
    except (StaleVersion, StaleDataError) as exc:
        raise VersionConflictError("The event changed concurrently; please retry") from exc
    except DBAPIError as exc:
        if _is_transient(exc):  # still deadlocked or serialisation-failed after every retry
            raise VersionConflictError("The event changed concurrently; please retry") from exc
        raise
    raise AssertionError("unreachable: the retry loop returns or raises")


# PostgreSQL's deadlock_detected and serialization_failure: the transaction may simply be run again.
TRANSIENT_SQLSTATES = {"40P01", "40001"}


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, StaleVersion | StaleDataError):
        return True
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES


def note_hold_expiry(session: AsyncSession, event_id: int, expires_at: datetime) -> None:
    """Remember the earliest expiry of holds this transaction creates (for the cache)."""
    expiries: dict[int, datetime] = session.info.setdefault("hold_expiries", {})
    current = expiries.get(event_id)
    expiries[event_id] = expires_at if current is None else min(current, expires_at)
