"""The race for the last seats across two app instances, and with Redis unreachable."""

from __future__ import annotations

import asyncio

from redis.asyncio.lock import Lock
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings
from tests.checks import assert_invariant, count
from tests.conftest import make_settings, running_app
from tests.support import closed_port


async def test_two_instances_sell_exactly_capacity(settings: Settings, db: AsyncConnection) -> None:
    async with running_app(settings) as first, running_app(settings) as second:
        await first.create_event(1, capacity=50)
        calls = [(first if user % 2 else second).book(user, 1) for user in range(100, 300)]
        responses = await asyncio.gather(*calls)
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 50 and statuses.count(409) == 150
    assert await count(db, "bookings") == 50
    await assert_invariant(db)


async def test_redis_unreachable_bookings_stay_correct(database_url: str, db: AsyncConnection) -> None:
    dead_redis = make_settings(database_url, f"redis://127.0.0.1:{closed_port()}/0")
    async with running_app(dead_redis) as first, running_app(dead_redis) as second:
        await first.create_event(1, capacity=50)
        calls = [(first if user % 2 else second).book(user, 1) for user in range(100, 300)]
        responses = await asyncio.gather(*calls)
        health = await first.client.get("/api/v1/health")
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 50 and statuses.count(409) == 150
    assert await count(db, "bookings") == 50
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    await assert_invariant(db)


async def test_a_lock_held_elsewhere_is_waited_for_then_released(settings: Settings, db: AsyncConnection) -> None:
    patient = settings.model_copy(update={"lock_wait_seconds": 30.0})
    async with running_app(patient) as api:
        await api.create_event(1, capacity=50)
        redis = api.runtime.redis.client
        key = api.runtime.redis.key("lock", "event", 1)
        # Another instance's hold, taken the way the service takes it (redis-py's Lock, same key).
        elsewhere = Lock(redis, key, timeout=60, thread_local=False)
        assert await elsewhere.acquire(blocking=False)
        booking = asyncio.create_task(api.book(5, 1))
        await asyncio.sleep(0.5)  # time to book, were the lock not waited for
        assert not booking.done()
        assert await count(db, "bookings") == 0
        await elsewhere.release()
        assert (await booking).status_code == 201
        assert await count(db, "bookings") == 1
        assert await redis.exists(key) == 0  # and the service let go of it in turn
        await assert_invariant(db)
