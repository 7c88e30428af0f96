"""Requests that queue for an event while its batch waits for the event's lock join that batch:
one transaction for them all, instead of this one and then another."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.errors import AppError
from app.schemas.booking import BookingRead
from tests.checks import assert_invariant
from tests.conftest import Api
from tests.support import UNPAIRED_SURROGATE, lock_held_elsewhere, request_for, until


async def transactions_of(db: AsyncConnection, user_ids: list[int]) -> int:
    """How many transactions wrote these users' bookings."""
    await db.rollback()
    query = text("SELECT count(DISTINCT xmin::text) FROM bookings WHERE user_id = ANY(:ids)")
    return int((await db.execute(query, {"ids": user_ids})).scalar_one())


async def transactions_per_event(db: AsyncConnection) -> dict[int, int]:
    """How many transactions wrote each event's bookings (rows written by one share its xmin)."""
    await db.rollback()
    rows = await db.execute(text("SELECT event_id, count(DISTINCT xmin::text) FROM bookings GROUP BY event_id"))
    return {int(event_id): int(transactions) for event_id, transactions in rows.all()}


async def test_requests_queued_while_the_batch_waits_for_its_lock_join_it(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=50)
    await api.create_event(2, capacity=50)
    batcher = api.runtime.batcher
    async with lock_held_elsewhere(api, 1):
        first = asyncio.create_task(batcher.submit(request_for(100, 1)))
        await until(lambda: batcher._drainer is not None and not batcher._queue)  # its batch of one waits for the lock
        assert not first.done()
        latecomers = [asyncio.create_task(batcher.submit(request_for(101 + n, 1))) for n in range(9)]
        await until(lambda: len(batcher._queue) == 9)
        # Requests for another event end the wait: booked meanwhile, not behind event 1's lock.
        other_event = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(request_for(200 + n, 2)) for n in range(2))), timeout=5
        )
        assert not first.done()
    bookings = await asyncio.wait_for(asyncio.gather(first, *latecomers), timeout=10)

    assert [b.user_id for b in [*bookings, *other_event]] == [100 + n for n in range(10)] + [200, 201]  # each its own
    # Event 1's ten bookings in one transaction; event 2's, not locked by that batch, in their own.
    assert await transactions_per_event(db) == {1: 1, 2: 1}
    assert (await api.availability(1))["available_capacity"] == 40
    await assert_invariant(db)


async def test_a_latecomer_with_a_value_that_cannot_be_stored_fails_alone(api: Api, db: AsyncConnection) -> None:
    """The batch splits to find the request at fault: latecomers are in its halves, and answered."""
    await api.create_event(1, capacity=50)
    batcher = api.runtime.batcher
    async with lock_held_elsewhere(api, 1):
        first = asyncio.create_task(batcher.submit(request_for(100, 1)))
        await until(lambda: batcher._drainer is not None and not batcher._queue)
        notes = [None, None, UNPAIRED_SURROGATE, None]
        latecomers = [
            asyncio.create_task(batcher.submit(request_for(101 + n, 1, notes=note))) for n, note in enumerate(notes)
        ]
        await until(lambda: len(batcher._queue) == 4)
    outcomes = await asyncio.wait_for(asyncio.gather(first, *latecomers, return_exceptions=True), timeout=10)

    poisoned = outcomes.pop(3)
    assert isinstance(poisoned, AppError) and poisoned.code == "invalid_value"
    assert [o.user_id for o in outcomes if isinstance(o, BookingRead)] == [100, 101, 102, 104]
    assert await transactions_of(db, [100, 101]) == 1  # one half of the batch the latecomers joined
    assert (await api.availability(1))["available_capacity"] == 46
    await assert_invariant(db)
