"""The Redis locks of several events, taken and released together (one script call each way), on
the real Redis: every lock or none is held while another holder has one of them (`event_locks`), or
the free ones only (`free_event_locks`), and a lock that changed hands is never released by its
former holder."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.core.config import Settings
from app.db import lock as lock_module
from app.db.lock import EventLocks, Patience, event_locks, free_event_locks
from app.db.redis import RedisGateway

EVENTS = [3, 1, 2]
ANOTHER_HOLDER = b"another holder"


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[RedisGateway]:
    gateway = RedisGateway(settings)
    yield gateway
    await gateway.close()


def names(gateway: RedisGateway, event_ids: list[int]) -> list[str]:
    return [gateway.key("lock", "event", event_id) for event_id in event_ids]


async def held_elsewhere(gateway: RedisGateway, event_id: int) -> str:
    """The event's lock taken by another holder; its key."""
    key = gateway.key("lock", "event", event_id)
    await gateway.client.set(key, ANOTHER_HOLDER)
    return key


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
        await redis.set(changed, ANOTHER_HOLDER)  # as if it had lapsed and been taken again
    assert await redis.get(changed) == ANOTHER_HOLDER
    assert await redis.exists(*names(gateway, [1, 3])) == 0


async def test_with_one_lock_held_elsewhere_only_the_earlier_ones_are_kept_while_waiting(
    gateway: RedisGateway, settings: Settings
) -> None:
    redis: Redis = gateway.client
    elsewhere = await held_elsewhere(gateway, 2)
    holding = asyncio.Event()

    async def book() -> None:
        async with event_locks(gateway, settings, EVENTS):
            holding.set()

    waiter = asyncio.create_task(book())
    async with asyncio.timeout(5):  # event 1 comes before 2 in event order: taken while 2 is waited for
        while not await redis.exists(gateway.key("lock", "event", 1)):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert not holding.is_set()
    assert await redis.exists(gateway.key("lock", "event", 3)) == 0  # after 2: not held while waiting
    await redis.delete(elsewhere)
    await asyncio.wait_for(waiter, timeout=5)
    assert holding.is_set()
    assert await redis.exists(*names(gateway, EVENTS)) == 0


async def test_holders_of_overlapping_events_take_turns_and_never_deadlock(settings: Settings) -> None:
    """Forty holders at once, each of three to six of eight events (as many instances' batches
    would be): never two inside with an event in common, and every one gets in."""
    # Locks that outlive every wait: one left behind would stop the holders after it, not lapse.
    patient = settings.model_copy(
        update={"lock_wait_seconds": 30.0, "lock_timeout_seconds": 120.0, "lock_poll_seconds": 0.001}
    )
    gateways = [RedisGateway(patient) for _ in range(4)]  # four instances' clients
    rng = random.Random(7)
    inside: set[int] = set()
    entered = 0

    async def hold(gateway: RedisGateway, events: list[int]) -> None:
        nonlocal entered
        async with event_locks(gateway, patient, events) as held:
            assert held and not inside & set(events)
            inside.update(events)
            await asyncio.sleep(rng.uniform(0, 0.005))
            inside.difference_update(events)
            entered += 1

    try:
        holders = [hold(gateways[n % 4], rng.sample(range(1, 9), rng.randint(3, 6))) for n in range(40)]
        await asyncio.wait_for(asyncio.gather(*holders), timeout=60)
    finally:
        for gateway in gateways:
            await gateway.close()
    assert entered == 40 and not inside


def patience(seconds: float, stop: asyncio.Event | None = None) -> Patience:
    return Patience(asyncio.get_running_loop().time() + seconds, stop or asyncio.Event())


async def test_the_free_locks_are_taken_at_once_and_a_busy_one_is_left_to_its_holder(
    gateway: RedisGateway, settings: Settings
) -> None:
    redis: Redis = gateway.client
    elsewhere = await held_elsewhere(gateway, 2)
    async with asyncio.timeout(1):  # a brief wait for event 2, not the 30 s allowed
        async with free_event_locks(gateway, settings, EVENTS, patience(30)) as held:
            assert held == {1, 3}
            assert await redis.exists(*names(gateway, [1, 3])) == 2
    assert await redis.exists(*names(gateway, [1, 3])) == 0
    assert await redis.get(elsewhere) == ANOTHER_HOLDER


async def test_a_busy_lock_is_waited_for_briefly_then_left(
    gateway: RedisGateway, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lock_module, "BRIEF_WAIT_SECONDS", 0.3)
    redis: Redis = gateway.client
    clock = asyncio.get_running_loop().time
    elsewhere = await held_elsewhere(gateway, 2)
    started = clock()
    async with free_event_locks(gateway, settings, EVENTS, patience(30)) as held:
        assert held == {1, 3}  # event 2 stayed busy: left after the brief wait
    assert 0.3 <= clock() - started < 5
    asyncio.get_running_loop().call_later(0.1, lambda: asyncio.ensure_future(redis.delete(elsewhere)))
    async with asyncio.timeout(5), free_event_locks(gateway, settings, EVENTS, patience(30)) as held:
        assert held == {1, 2, 3}  # event 2 came free within it: taken with the others


async def test_with_no_lock_free_they_are_tried_again_until_one_comes_free(
    gateway: RedisGateway, settings: Settings
) -> None:
    redis: Redis = gateway.client
    for event_id in EVENTS:
        await held_elsewhere(gateway, event_id)
    entered: asyncio.Future[frozenset[int]] = asyncio.get_running_loop().create_future()

    async def book() -> None:
        async with free_event_locks(gateway, settings, EVENTS, patience(30)) as held:
            entered.set_result(held)

    waiter = asyncio.create_task(book())
    await asyncio.sleep(0.2)
    assert not entered.done()
    await redis.delete(gateway.key("lock", "event", 3))
    assert await asyncio.wait_for(entered, timeout=5) == {3}
    await waiter
    assert await redis.get(gateway.key("lock", "event", 1)) == ANOTHER_HOLDER


async def test_busy_locks_are_waited_for_as_long_as_patience_lasts(gateway: RedisGateway, settings: Settings) -> None:
    await held_elsewhere(gateway, 1)
    clock = asyncio.get_running_loop().time
    started = clock()
    async with asyncio.timeout(5), free_event_locks(gateway, settings, [1], patience(0.3)) as held:
        assert held == frozenset()
    assert clock() - started >= 0.3
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)  # a request for another event came
    started = clock()
    async with asyncio.timeout(5), free_event_locks(gateway, settings, [1], patience(30, stop)) as held:
        assert held == frozenset()
    assert 0.2 <= clock() - started < 5


async def test_a_turn_taken_in_this_instance_is_left_and_queued_for_only_when_none_is_free(
    gateway: RedisGateway, settings: Settings
) -> None:
    locks = EventLocks(gateway, settings)
    clock = asyncio.get_running_loop().time
    async with locks.turn([2]):  # another writer of this instance at event 2
        async with asyncio.timeout(1), locks.free_turn([3, 2, 1], patience(30)) as ours:
            assert ours == [1, 3]
        started = clock()
        async with locks.free_turn([2], patience(0.3)) as ours:
            assert ours == []
        assert clock() - started >= 0.3
    async with locks.free_turn([2], patience(0.3)) as ours:
        assert ours == [2]


async def test_a_turn_queued_for_is_taken_when_the_writer_before_leaves(
    gateway: RedisGateway, settings: Settings
) -> None:
    locks = EventLocks(gateway, settings)
    before_leaves = asyncio.Event()

    async def writer_before() -> None:
        async with locks.turn([2]):
            await before_leaves.wait()

    before = asyncio.create_task(writer_before())
    await asyncio.sleep(0)
    asyncio.get_running_loop().call_later(0.2, before_leaves.set)
    async with asyncio.timeout(5), locks.free_turn([2], patience(30)) as ours:
        assert ours == [2]
    await before
