"""The race for the last seats across two app instances, and with Redis unreachable."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings
from tests.checks import assert_invariant, count
from tests.conftest import make_settings, running_app
from tests.redis_server import free_port


def closed_port() -> int:
    """A port nothing listens on."""
    return free_port()


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


async def test_a_lock_held_elsewhere_is_waited_for_then_released(settings: Settings) -> None:
    async with running_app(settings) as api:
        await api.create_event(1, capacity=50)
        await api.create_event(2, capacity=50)
        redis = api.runtime.redis.client
        held_elsewhere = api.runtime.redis.key("lock", "event", 2)
        await redis.set(held_elsewhere, "another-instance", px=300)
        responses = await asyncio.gather(api.book(5, 1), api.book(6, 2))
        assert [r.status_code for r in responses] == [201, 201]
        assert await redis.exists(api.runtime.redis.key("lock", "event", 1), held_elsewhere) == 0
