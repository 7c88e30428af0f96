"""An event whose lock another writer holds (another instance's Redis lock, or this instance's turn)
neither holds up nor fails the other events of the batch it is in: they are booked at once, and its
requests wait in later batches for its lock, until LOCK_WAIT_SECONDS have passed since they first
met it."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings
from app.core.errors import LockTimeoutError
from app.schemas.booking import BookingRead
from app.services.unit_of_work import UnitOfWork
from tests.checks import assert_invariant
from tests.conftest import Api, running_app
from tests.support import lock_held_elsewhere, request_for, until


async def bookings_of(db: AsyncConnection, event_id: int) -> list[int]:
    """The users of the event's bookings, in the order they were booked."""
    await db.rollback()
    rows = await db.execute(
        text("SELECT user_id FROM bookings WHERE event_id = :event ORDER BY id"), {"event": event_id}
    )
    return [int(user_id) for user_id in rows.scalars()]


async def test_a_busy_event_does_not_hold_up_the_batchs_other_events(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=50)
    await api.create_event(2, capacity=50)
    batcher = api.runtime.batcher
    async with lock_held_elsewhere(api, 1):
        # Submitted together: one batch of both events, event 1's requests first.
        busy = [asyncio.create_task(batcher.submit(request_for(100 + n, 1))) for n in range(3)]
        free = [asyncio.create_task(batcher.submit(request_for(200 + n, 2))) for n in range(2)]
        # Well within LOCK_WAIT_SECONDS (2 s): the batch did not wait for event 1's lock.
        booked = await asyncio.wait_for(asyncio.gather(*free), timeout=1.5)
        assert [booking.user_id for booking in booked] == [200, 201]
        assert not any(task.done() for task in busy)
        assert await bookings_of(db, 1) == []
    # Once the lock is free, event 1's requests are booked, in the order they came.
    await asyncio.wait_for(asyncio.gather(*busy), timeout=5)
    assert await bookings_of(db, 1) == [100, 101, 102]
    assert (await api.availability(1))["available_capacity"] == 47
    assert (await api.availability(2))["available_capacity"] == 48
    await assert_invariant(db)


async def test_a_writer_here_waiting_for_a_busy_event_does_not_hold_up_the_batchs_other_events(
    api: Api, db: AsyncConnection
) -> None:
    """Another writer of this instance (a cancellation, say) at event 1's turn, itself waiting for
    the event's lock held elsewhere: the batch books event 2 without waiting for that turn."""
    await api.create_event(1, capacity=50)
    await api.create_event(2, capacity=50)
    batcher, locks = api.runtime.batcher, api.runtime.locks
    changed = asyncio.Event()

    async def change(uow: UnitOfWork) -> None:
        changed.set()

    async with lock_held_elsewhere(api, 1):
        writer = asyncio.create_task(api.runtime.transactions.locked(1, change))
        await until(lambda: 1 in locks._local and locks._local[1].locked())  # its turn, waiting for Redis
        busy = asyncio.create_task(batcher.submit(request_for(100, 1)))
        free = asyncio.create_task(batcher.submit(request_for(200, 2)))
        booking = await asyncio.wait_for(free, timeout=1.5)
        assert booking.user_id == 200
        assert not busy.done() and not changed.is_set()
    await asyncio.wait_for(writer, timeout=5)
    assert changed.is_set()
    assert (await asyncio.wait_for(busy, timeout=5)).user_id == 100
    assert await bookings_of(db, 1) == [100]
    await assert_invariant(db)


async def test_a_request_whose_event_stays_busy_fails_alone_when_its_wait_is_over(
    settings: Settings, db: AsyncConnection
) -> None:
    wait = 0.5
    async with running_app(settings.model_copy(update={"lock_wait_seconds": wait})) as api:
        await api.create_event(1, capacity=50)
        await api.create_event(2, capacity=50)
        batcher = api.runtime.batcher
        loop = asyncio.get_running_loop()
        async with lock_held_elsewhere(api, 1):
            started = loop.time()
            busy = asyncio.create_task(batcher.submit(request_for(100, 1)))
            free = [asyncio.create_task(batcher.submit(request_for(200, 2)))]
            while not busy.done():  # event 2's bookings keep coming: batches with a free event
                free.append(asyncio.create_task(batcher.submit(request_for(200 + len(free), 2))))
                await asyncio.sleep(0.05)
            waited = loop.time() - started
            outcomes = await asyncio.gather(busy, *free, return_exceptions=True)

        refusal, *bookings = outcomes
        assert isinstance(refusal, LockTimeoutError) and refusal.code == "lock_timeout"
        assert wait <= waited < wait + 1.0
        assert all(isinstance(booking, BookingRead) for booking in bookings), bookings
        assert len(bookings) >= 5 and await bookings_of(db, 2) == [200 + n for n in range(len(bookings))]
        assert await bookings_of(db, 1) == []
        await assert_invariant(db)
