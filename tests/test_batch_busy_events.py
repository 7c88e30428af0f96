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
    settings: Settings, db: AsyncConnection
) -> None:
    """Another writer of this instance (a cancellation, say) at event 1's turn, itself waiting for
    the event's lock held elsewhere: the batch books event 2 without waiting for that turn."""
    async with running_app(settings.model_copy(update={"lock_wait_seconds": 10.0})) as api:
        await writer_here_and_batch(api, db)


async def writer_here_and_batch(api: Api, db: AsyncConnection) -> None:
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
    """Event 2's requests keep coming, one every 50 ms, while event 1 stays busy: each is booked at
    once, not after event 1's wait; event 1's request alone is refused, once its wait is over."""
    wait = 1.0
    async with running_app(settings.model_copy(update={"lock_wait_seconds": wait})) as api:
        await api.create_event(1, capacity=50)
        await api.create_event(2, capacity=50)
        batcher = api.runtime.batcher
        clock = asyncio.get_running_loop().time

        async def book_timed(user_id: int, event_id: int) -> tuple[float, BookingRead]:
            started = clock()
            booking = await batcher.submit(request_for(user_id, event_id))
            return clock() - started, booking

        async with lock_held_elsewhere(api, 1):
            started = clock()
            busy = asyncio.create_task(book_timed(100, 1))
            free = [asyncio.create_task(book_timed(200, 2))]
            while not busy.done():
                await asyncio.sleep(0.05)
                free.append(asyncio.create_task(book_timed(200 + len(free), 2)))
            waited = clock() - started
            outcomes = await asyncio.gather(busy, *free, return_exceptions=True)

        refusal, *timed_bookings = outcomes
        assert isinstance(refusal, LockTimeoutError) and refusal.code == "lock_timeout"
        assert wait <= waited < wait + 1.0
        assert all(isinstance(timed, tuple) for timed in timed_bookings), timed_bookings
        seconds = [timed[0] for timed in timed_bookings if isinstance(timed, tuple)]
        assert max(seconds) < wait / 2, seconds  # none waited behind event 1
        assert len(seconds) >= 10 and await bookings_of(db, 2) == [200 + n for n in range(len(seconds))]
        assert await bookings_of(db, 1) == []
        await assert_invariant(db)
