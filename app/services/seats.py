"""Moves of seats between available, reserved and confirmed (SPEC sections 1 and 2).

Every move is one relative `UPDATE` of the event's row; the table's CHECK constraints keep the
invariant whatever happens. Seats are taken from `available` one way only, `take_seats`: checked
against the version each event's row had when read. A stale version raises `StaleVersion`, and
the unit of work's runner runs the whole transaction again (app/services/unit_of_work.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Integer, func, inspect, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.expression import bindparam

from app.core.errors import InsufficientCapacityError, NotFoundError, SalesClosedError
from app.db.base import table_of
from app.models.event_availability import EventAvailability
from app.schemas.availability import EventAvailabilityRead
from app.services.unit_of_work import StaleVersion, UnitOfWork


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


def check_sales_open(event: EventAvailability) -> None:
    if not event.sales_open:
        raise SalesClosedError(f"Sales for event {event.event_id} are closed")


def check_open(event: EventAvailability, quantity: int) -> None:
    """Refuse `quantity` seats of `event` when its sales are closed or too few seats are open."""
    check_sales_open(event)
    if event.available_capacity < quantity:
        raise InsufficientCapacityError(event.available_capacity)


# The seat counts per event, as arrays: one statement shape whatever the number of events, so
# SQLAlchemy compiles it once.
SEATS_TAKEN = select(
    func.unnest(bindparam("event_ids", type_=ARRAY(BigInteger))).label("event_id"),
    func.unnest(bindparam("totals", type_=ARRAY(Integer))).label("total"),
    func.unnest(bindparam("versions", type_=ARRAY(Integer))).label("version"),
).subquery("taken")

# A Core statement on the table, not the ORM's bulk UPDATE: the ORM annotates its statement anew at
# each execution, so SQLAlchemy would compute its cache key (this one carries the unit's inserts) and
# load the returned rows as entities every time. The events' objects are brought up to date from the
# returned rows instead.
EVENTS = table_of(EventAvailability)
TAKE_SEATS = (
    update(EVENTS)
    .where(
        EVENTS.c.event_id == SEATS_TAKEN.c.event_id,
        EVENTS.c.version == SEATS_TAKEN.c.version,
        EVENTS.c.available_capacity >= SEATS_TAKEN.c.total,
    )
    .values(
        available_capacity=EVENTS.c.available_capacity - SEATS_TAKEN.c.total,
        reserved_capacity=EVENTS.c.reserved_capacity + SEATS_TAKEN.c.total,
        version=EVENTS.c.version + 1,
    )
    .returning(*EVENTS.c)
)
# Each returned column with the attribute of `EventAvailability` that holds it.
EVENT_ATTRIBUTES = [(column.key, inspect(EventAvailability).get_property_by_column(column).key) for column in EVENTS.c]


async def take_seats(uow: UnitOfWork, wanted: Sequence[tuple[EventAvailability, int]]) -> list[EventAvailability]:
    """Hold seats (available -> reserved) of each event as read, in one statement for them all.

    Each event's row must still have the version it was read with; if any has moved on,
    `StaleVersion` rolls the whole transaction back and it is run again. The unit's rows and
    records made so far are written in the same statement.
    """
    for event, _ in wanted:
        uow.check_locked(event.event_id)
    params = {
        "event_ids": [event.event_id for event, _ in wanted],
        "totals": [quantity for _, quantity in wanted],
        "versions": [event.version for event, _ in wanted],
    }
    rows = (await uow.execute_writing(TAKE_SEATS, params)).mappings().all()
    if len(rows) != len(wanted):
        raise StaleVersion()
    events = {event.event_id: event for event, _ in wanted}
    updated = [events[row["event_id"]] for row in rows]
    for event, row in zip(updated, rows, strict=True):
        # Every column comes back, not only those the UPDATE sets: a change that moves no version
        # (an event's waiting-room settings) may have come between the read and the UPDATE.
        for column, attribute in EVENT_ATTRIBUTES:
            if getattr(event, attribute) != row[column]:
                set_committed_value(event, attribute, row[column])  # as read: nothing to flush
        uow.moved(event)
    return updated


async def shift_seats(
    uow: UnitOfWork,
    event_id: int,
    *,
    available: int = 0,
    reserved: int = 0,
    confirmed: int = 0,
) -> EventAvailability:
    """Move seats between the counters; the deltas must add up to zero."""
    if available + reserved + confirmed != 0:
        raise ValueError("seat moves must keep the total")
    uow.check_locked(event_id)
    updated = await uow.session.scalar(
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
    uow.moved(updated)
    return updated
