"""The hot path: new bookings of one event share one transaction.

Requests for the same event queue in-process; one drainer per event takes everything waiting,
takes the event's Redis lock once, and books the whole batch in one transaction (one
version-checked capacity `UPDATE` for the total, one multi-row `INSERT` each for bookings, audit
rows and outbox messages). Each request still gets its own answer. This is how a hot event gets
past the per-row commit ceiling of one booking per transaction (see bench/README.md).

Seats go to requests in arrival order; a request that does not fit in what is left is refused
with `insufficient_capacity` while smaller ones behind it may still fit.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import metrics
from app.core.clock import clock
from app.core.errors import AppError, InsufficientCapacityError, SalesClosedError
from app.core.logging import get_logger
from app.db.base import table_of
from app.models.booking import Booking
from app.models.enums import BookingStatus, PaymentStatus
from app.models.event_availability import EventAvailability
from app.schemas.booking import BookingRead
from app.services import audit, idempotency, outbox
from app.services.audit import Actor
from app.services.capacity import StaleVersion, get_event, remember_event, run_locked
from app.services.runtime import Runtime

log = get_logger(__name__)

HOT_EVENT_MEMORY_SECONDS = 1.0
REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


def new_booking_reference() -> str:
    """`BK-` and ten random characters: short to read out, 50 bits, not derivable from another."""
    bits = secrets.randbits(50)
    return "BK-" + "".join(REFERENCE_ALPHABET[(bits >> shift) & 31] for shift in range(0, 50, 5))


@dataclass
class BookingRequest:
    actor: Actor
    user_id: int
    event_id: int
    quantity: int
    payment_method: str | None = None
    notes: str | None = None
    claim: idempotency.Claim | None = None
    future: asyncio.Future[BookingRead] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


Outcome = BookingRead | AppError


class BookingBatcher:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._queues: dict[int, deque[BookingRequest]] = {}
        self._drainers: dict[int, asyncio.Task[None]] = {}
        self._hot_until: dict[int, float] = {}

    async def submit(self, request: BookingRequest) -> BookingRead:
        self._queues.setdefault(request.event_id, deque()).append(request)
        if request.event_id not in self._drainers:
            self._drainers[request.event_id] = asyncio.create_task(self._drain(request.event_id))
        # Shielded: a client that goes away must not cancel the batch it is part of.
        return await asyncio.shield(request.future)

    async def close(self) -> None:
        """Wait for the batches in flight (graceful shutdown)."""
        if self._drainers:
            await asyncio.gather(*self._drainers.values(), return_exceptions=True)

    async def _drain(self, event_id: int) -> None:
        queue = self._queues[event_id]
        settings = self._runtime.settings
        loop = asyncio.get_running_loop()
        try:
            while queue:
                if len(queue) < settings.booking_batch_max and self._hot_until.get(event_id, 0.0) > loop.time():
                    # A hot event's clients answered by the last batch are about to come back:
                    # a short wait lets them share this transaction instead of the next one.
                    await asyncio.sleep(settings.booking_batch_linger_ms / 1000)
                batch = [queue.popleft() for _ in range(min(len(queue), settings.booking_batch_max))]
                if len(batch) > 1:
                    self._hot_until[event_id] = loop.time() + HOT_EVENT_MEMORY_SECONDS
                await self._process(event_id, batch)
        finally:
            del self._drainers[event_id]
            if not queue:
                del self._queues[event_id]
            if self._hot_until.get(event_id, 0.0) <= loop.time():
                self._hot_until.pop(event_id, None)

    async def _process(self, event_id: int, batch: list[BookingRequest]) -> None:
        try:
            outcomes = await run_locked(self._runtime, event_id, lambda session: self._book(session, event_id, batch))
        except Exception as exc:  # every waiting request gets the batch's failure
            if not isinstance(exc, AppError):
                log.exception("booking_batch_failed", event_id=event_id, size=len(batch))
            for request in batch:
                _settle(request, exc)
            return
        for request, outcome in zip(batch, outcomes, strict=True):
            _settle(request, outcome)

    async def _book(self, session: AsyncSession, event_id: int, batch: list[BookingRequest]) -> list[Outcome]:
        event = await get_event(session, event_id)
        if not event.sales_open:
            raise SalesClosedError(f"Sales for event {event_id} are closed")
        accepted, outcomes = _allocate(event.available_capacity, batch)
        if accepted:
            now = clock.now()
            expires_at = now + timedelta(minutes=self._runtime.settings.booking_timeout_minutes)
            bookings = await _insert_bookings(session, event, accepted, now, expires_at)
            await _record(session, accepted, bookings, now)
            await _take_for_batch(session, event, sum(r.quantity for r in accepted))
            booked = iter(bookings)
            outcomes = [next(booked) if o is None else o for o in outcomes]
        metrics.BOOKING_BATCH_SIZE.observe(len(accepted))
        return [o for o in outcomes if o is not None]


def _allocate(available: int, batch: list[BookingRequest]) -> tuple[list[BookingRequest], list[Outcome | None]]:
    """Seats in arrival order; `None` marks a request that gets a booking."""
    accepted: list[BookingRequest] = []
    outcomes: list[Outcome | None] = []
    for request in batch:
        if request.quantity <= available:
            available -= request.quantity
            accepted.append(request)
            outcomes.append(None)
        else:
            outcomes.append(InsufficientCapacityError(available))
    return accepted, outcomes


async def _insert_bookings(
    session: AsyncSession,
    event: EventAvailability,
    accepted: list[BookingRequest],
    now: datetime,
    expires_at: datetime,
) -> list[BookingRead]:
    """One multi-row INSERT (Core, not the ORM: this runs for every booking of a hot event)."""
    rows = [
        {
            "user_id": r.user_id,
            "event_id": event.event_id,
            "booking_reference": new_booking_reference(),
            "quantity": r.quantity,
            "total_amount": event.price * Decimal(r.quantity),
            "currency": event.currency,
            "status": BookingStatus.PENDING,
            "payment_status": PaymentStatus.PENDING,
            "booking_date": now,
            "expires_at": expires_at,
            "payment_method": r.payment_method,
            "notes": r.notes,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for r in accepted
    ]
    table = table_of(Booking)
    result = await session.execute(insert(table).returning(*table.c, sort_by_parameter_order=True), rows)
    # A new pending booking is active and not expired.
    return [BookingRead.model_validate({**row._mapping, "is_active": True, "is_expired": False}) for row in result]


async def _record(
    session: AsyncSession, accepted: list[BookingRequest], bookings: list[BookingRead], now: datetime
) -> None:
    audit_rows = []
    messages = []
    for request, booking in zip(accepted, bookings, strict=True):
        data = booking.model_dump(mode="json")
        audit_rows.append(audit.audit_row(request.actor, "booking.created", "booking", booking.id, now, after=data))
        messages.append(outbox.booking_message("BookingCreated", data, now))
        await idempotency.store_in(session, request.claim, 201, data)
    await audit.record(session, *audit_rows)
    await outbox.enqueue(session, now, *messages)


async def _take_for_batch(session: AsyncSession, event: EventAvailability, total: int) -> None:
    """The batch's one capacity update: last statement before the commit, version-checked."""
    updated = await session.scalar(
        update(EventAvailability)
        .where(
            EventAvailability.event_id == event.event_id,
            EventAvailability.version == event.version,
            EventAvailability.available_capacity >= total,
        )
        .values(
            available_capacity=EventAvailability.available_capacity - total,
            reserved_capacity=EventAvailability.reserved_capacity + total,
            version=EventAvailability.version + 1,
        )
        .returning(EventAvailability)
        .execution_options(populate_existing=True)
    )
    if updated is None:
        raise StaleVersion()
    remember_event(session, updated)


def _settle(request: BookingRequest, outcome: Outcome | BaseException) -> None:
    if request.future.done():
        return
    if isinstance(outcome, BookingRead):
        metrics.BOOKINGS.labels("created").inc()
        request.future.set_result(outcome)
    else:
        label = "insufficient_capacity" if isinstance(outcome, InsufficientCapacityError) else "error"
        if isinstance(outcome, AppError) and outcome.code == "version_conflict":
            label = "conflict"
        metrics.BOOKINGS.labels(label).inc()
        request.future.set_exception(outcome)
