"""The booking path run once before the first request, so that the first crowd does not pay for it.

A new instance's first booking batches cost several times a later one: SQLAlchemy compiles their
statements, and on each new connection PostgreSQL loads the catalog of the tables they touch and
asyncpg prepares them (measured: 55 to 100 ms for each worker's first batch against 10 to 20 ms for
the next ones, while 64 clients queued behind it). An instance started during an on-sale rush (a
restart, a scale-out) would otherwise answer its first few hundred requests that slowly.

At start-up, on each of `WARM_UP_CONNECTIONS` pooled connections (2: the booking batch's and the
outbox relay's, what one instance holds under a rush), the warm-up books seats as batches do, in a
transaction rolled back, on events made up in it (negative ids, which no real event or booking has):
nothing it writes stays, nothing is announced, no booking id is drawn. If it fails (the database
does not answer yet, say), the service starts all the same and its first batches warm up instead.
"""

from __future__ import annotations

import asyncio
import secrets
from decimal import Decimal

from app.core.logging import get_logger
from app.models.event_availability import EventAvailability
from app.runtime import Runtime
from app.services.unit_of_work import UnitOfWork

log = get_logger(__name__)

# Bounds the start-up's wait for a database that does not answer.
WARM_UP_SECONDS = 5.0


async def warm_up(runtime: Runtime) -> None:
    """Rehearse the booking path on the pool's first `WARM_UP_CONNECTIONS`; log, never raise, on failure."""
    settings = runtime.settings
    connections = min(settings.warm_up_connections, settings.db_pool_size)
    if not connections:
        return
    made_up = _made_up_ids(2 + 3 * connections)
    event_ids, booking_ids = made_up[:2], iter(made_up[2:])

    async def book_on_made_up_events(uow: UnitOfWork) -> None:
        uow.session.add_all(_made_up_event(event_id) for event_id in event_ids)
        await uow.session.flush()
        await runtime.batcher.rehearse(uow, event_ids, booking_ids)

    try:
        async with asyncio.timeout(WARM_UP_SECONDS):
            await runtime.transactions.rehearse(book_on_made_up_events, frozenset(event_ids), connections)
    except Exception as exc:
        log.warning("warm_up_failed", error=repr(exc))


def _made_up_ids(count: int) -> list[int]:
    """Distinct negative ids, which no real event or booking has, drawn anew so that instances
    warming up at once do not wait on each other. Bookings' ids are not drawn from their sequence:
    a fresh service's first booking is still number 1."""
    first = -secrets.randbelow(2**62) - count
    return list(range(first, first + count))


def _made_up_event(event_id: int) -> EventAvailability:
    return EventAvailability(
        event_id=event_id,
        event_name="warm-up",
        total_capacity=2,
        available_capacity=2,
        reserved_capacity=0,
        confirmed_capacity=0,
        price=Decimal("1.00"),
        currency="USD",
        sales_open=True,
        event_status="published",
        version=1,
    )
