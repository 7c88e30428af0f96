"""The booking path run once before the first request, so that the first crowd does not pay for it.

A new instance's first booking batches cost several times a later one: SQLAlchemy compiles their
statements, and on each new connection PostgreSQL loads the catalog of the tables they touch and
asyncpg prepares them (measured: 55 to 100 ms for each worker's first batch against 10 to 20 ms for
the next ones, while 64 clients queued behind it). An instance started during an on-sale rush (a
restart, a scale-out) would otherwise answer its first few hundred requests that slowly.

At start-up, on each of `WARM_UP_CONNECTIONS` pooled connections, the warm-up books seats as batches
do, in a transaction rolled back, on two events made up in it (negative ids, which no real event or
booking has; one with a per-buyer limit): no row stays, nothing is announced. The pool hands out
its oldest idle connection, so a worker's batches and its outbox relay take turns on the warm ones
(two under the benchmark's rush). Behind a transaction-mode pooler (`DB_PREPARED_STATEMENTS=false`)
only the compiling and the server connections' caches are saved. If the warm-up fails (the database
does not answer yet, say), it is logged and the service starts all the same, its first batches cold.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from decimal import Decimal

from app.core.logging import get_logger
from app.models.event_availability import EventAvailability
from app.runtime import Runtime
from app.services.unit_of_work import UnitOfWork

log = get_logger(__name__)

# Bounds the start-up's wait for a database that does not answer (a connection cut off then takes
# up to two more seconds to close).
WARM_UP_SECONDS = 2.0


async def warm_up(runtime: Runtime) -> None:
    """Rehearse the booking path on the pool's first connections; log, never raise, on failure."""
    settings = runtime.settings
    connections = min(settings.warm_up_connections, settings.db_pool_size)
    if not connections:
        return
    # Drawn anew, so that instances warming up at once do not wait on each other's rows. Bookings'
    # ids are made up too: none is drawn from their sequence (a fresh service's first booking is 1).
    first = -secrets.randbelow(2**62) - 1
    event_ids, made_up_ids = [first, first - 1], itertools.count(first - 2, -1)

    async def book_on_made_up_events(uow: UnitOfWork) -> None:
        uow.session.add_all([_made_up_event(event_ids[0]), _made_up_event(event_ids[1], max_tickets_per_user=1)])
        await uow.session.flush()
        await runtime.batcher.rehearse(uow, event_ids, made_up_ids)

    try:
        async with asyncio.timeout(WARM_UP_SECONDS):
            await runtime.transactions.rehearse(book_on_made_up_events, frozenset(event_ids), connections)
    except Exception as exc:
        log.warning("warm_up_failed", error_type=type(exc).__name__, exc_info=True)


def _made_up_event(event_id: int, max_tickets_per_user: int | None = None) -> EventAvailability:
    """An event with seats enough for the rehearsal (two of the first); its row id is its event id,
    so that no id is drawn from the events' sequence either (the first real event's is 1)."""
    return EventAvailability(
        id=event_id,
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
        max_tickets_per_user=max_tickets_per_user,
        version=1,
    )
