"""The Redis locks of several events, taken and released together (one script call each way), on
the real Redis: every lock or none is held while another holder has one of them, and a lock that
changed hands is never released by its former holder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.core.config import Settings
from app.db.lock import event_locks
from app.db.redis import RedisGateway

EVENTS = [3, 1, 2]


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[RedisGateway]:
    gateway = RedisGateway(settings)
    yield gateway
    await gateway.close()


def names(gateway: RedisGateway, event_ids: list[int]) -> list[str]:
    return [gateway.key("lock", "event", event_id) for event_id in event_ids]


async def test_every_lock_is_held_with_one_token_and_a_lifetime_then_released(
    gateway: RedisGateway, settings: Settings
) -> None:
    redis: Redis = gateway.client
    async with event_locks(gateway, settings, EVENTS) as held:
        assert held
        tokens = {await redis.get(name) for name in names(gateway, EVENTS)}
        lifetimes = [await redis.pttl(name) for name in names(gateway, EVENTS)]
        assert len(tokens) == 1 and None not in tokens
        assert all(0 < ms <= settings.lock_timeout_seconds * 1000 for ms in lifetimes)
    assert await redis.exists(*names(gateway, EVENTS)) == 0


async def test_a_lock_that_changed_hands_stays_with_its_new_holder(gateway: RedisGateway, settings: Settings) -> None:
    redis: Redis = gateway.client
    changed = gateway.key("lock", "event", 2)
    async with event_locks(gateway, settings, EVENTS):
        await redis.set(changed, b"another holder")  # as if it had lapsed and been taken again
    assert await redis.get(changed) == b"another holder"
    assert await redis.exists(*names(gateway, [1, 3])) == 0


async def test_with_one_lock_held_elsewhere_none_is_kept_while_waiting(
    gateway: RedisGateway, settings: Settings
) -> None:
    redis: Redis = gateway.client
    elsewhere = gateway.key("lock", "event", 2)
    await redis.set(elsewhere, b"another holder")
    holding = asyncio.Event()

    async def book() -> None:
        async with event_locks(gateway, settings, EVENTS):
            holding.set()

    waiter = asyncio.create_task(book())
    await asyncio.sleep(0.3)
    # Event 1 comes before 2 in event order and is held while 2 is waited for; event 3 is not.
    assert not holding.is_set()
    assert await redis.exists(gateway.key("lock", "event", 3)) == 0
    await redis.delete(elsewhere)
    await asyncio.wait_for(waiter, timeout=5)
    assert holding.is_set()
    assert await redis.exists(*names(gateway, EVENTS)) == 0
