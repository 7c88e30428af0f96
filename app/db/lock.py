"""The per-event lock (SPEC section 2): redis-py's Lock, bounded wait, never required for safety.

PostgreSQL's constraints keep the capacity invariant; the lock only keeps instances from piling
onto the same row. When Redis is unreachable the caller proceeds without it and that is logged,
counted and reported as degraded health.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.lock import Lock

from app.core import metrics
from app.core.config import Settings
from app.core.errors import LockTimeoutError
from app.core.logging import get_logger
from app.db.redis import RedisGateway, RedisUnavailable, per_key, queue_script_per_slot

log = get_logger(__name__)


def _lock(gateway: RedisGateway, settings: Settings, event_id: int) -> Lock:
    return Lock(
        gateway.client,
        gateway.key("lock", "event", event_id),
        timeout=settings.lock_timeout_seconds,
        sleep=settings.lock_poll_seconds,
        blocking_timeout=settings.lock_wait_seconds,
        thread_local=False,
    )


def _name(lock: Lock) -> str:
    assert isinstance(lock.name, str)  # a key `_lock` made
    return lock.name


class EventLocks:
    """Per-event locks of one instance: an in-process queue in front of the Redis lock.

    Writers of the same event in this instance wait their `turn` in-process, so only one of them
    at a time contends (and polls) for the Redis lock that other instances also take
    (`across_instances`); what a writer needs for its transaction, it takes between the two. The
    booking batcher takes both for the free events of its batch only (`free_turn`,
    `free_across_instances`), and waits only when none is free.
    """

    def __init__(self, gateway: RedisGateway, settings: Settings) -> None:
        self._gateway = gateway
        self._settings = settings
        self._local: dict[int, asyncio.Lock] = {}
        self._users: dict[int, int] = {}

    @asynccontextmanager
    async def turn(self, event_ids: Iterable[int]) -> AsyncIterator[list[int]]:
        """This instance's turn at every given event, for the body; yields the events."""
        ids = sorted(set(event_ids))
        taken: list[asyncio.Lock] = []
        with self._using(ids):
            try:
                await self._queue_for(ids, taken)
                yield ids
            finally:
                _release_local(taken)

    @asynccontextmanager
    async def free_turn(self, event_ids: Iterable[int], patience: Patience) -> AsyncIterator[list[int]]:
        """This instance's turn at those of the events no other writer here is at or waiting for,
        for the body; yields those events. When none is free, it queues for the first as long as
        `patience` lasts, and yields no event if that one's turn has not come."""
        ids = sorted(set(event_ids))
        taken: list[asyncio.Lock] = []
        with self._using(ids):
            try:
                # Only this writer uses the event's lock: it is free and nobody queues for it.
                ours = [event_id for event_id in ids if self._users[event_id] == 1]
                for event_id in ours:
                    await self._local[event_id].acquire()  # free: returns at once
                    taken.append(self._local[event_id])
                if ids and not ours and await _queue_patiently(self._local[ids[0]], patience):
                    ours = ids[:1]
                    taken.append(self._local[ids[0]])
                yield ours
            finally:
                _release_local(taken)

    @contextmanager
    def _using(self, ids: list[int]) -> Iterator[None]:
        """The events' in-process locks, kept while someone uses them."""
        for event_id in ids:
            self._users[event_id] = self._users.get(event_id, 0) + 1
            self._local.setdefault(event_id, asyncio.Lock())
        try:
            yield
        finally:
            for event_id in ids:
                self._forget(event_id)

    async def _queue_for(self, ids: list[int], taken: list[asyncio.Lock]) -> None:
        """Take the in-process locks in event order, waiting LOCK_QUEUE_SECONDS at most in all."""
        waiting_for = ids[0] if ids else 0
        try:
            async with asyncio.timeout(self._settings.lock_queue_seconds):
                for waiting_for in ids:
                    local = self._local[waiting_for]
                    await local.acquire()
                    taken.append(local)
        except TimeoutError:
            metrics.LOCK_ACQUISITIONS.labels("timeout").inc()
            raise LockTimeoutError(waiting_for) from None

    def _forget(self, event_id: int) -> None:
        self._users[event_id] -= 1
        if not self._users[event_id]:
            del self._users[event_id]
            del self._local[event_id]

    def across_instances(self, event_ids: Iterable[int]) -> AbstractAsyncContextManager[bool]:
        """The events' Redis locks, for the body (in this instance's turn); yields whether held."""
        return event_locks(self._gateway, self._settings, event_ids)

    def free_across_instances(
        self, event_ids: Iterable[int], patience: Patience
    ) -> AbstractAsyncContextManager[frozenset[int]]:
        """The Redis locks of those events that are free, for the body; yields the events held."""
        return free_event_locks(self._gateway, self._settings, event_ids, patience)


@dataclass(frozen=True)
class Patience:
    """How long a writer waits for a busy event: until the event loop's time `until`, or until
    `stop` is set (the batcher sets it when a request for another event arrives)."""

    until: float
    stop: asyncio.Event

    def lasts(self) -> bool:
        return not self.stop.is_set() and asyncio.get_running_loop().time() < self.until

    def at_most(self, seconds: float) -> Patience:
        """This patience, ending `seconds` from now if that comes first."""
        return Patience(min(self.until, asyncio.get_running_loop().time() + seconds), self.stop)


async def _queue_patiently(local: asyncio.Lock, patience: Patience) -> bool:
    """Whether `local` was taken, queued for as long as `patience` lasts."""
    acquiring = asyncio.ensure_future(local.acquire())
    stopping = asyncio.ensure_future(patience.stop.wait())
    timeout = max(0.0, patience.until - asyncio.get_running_loop().time())
    try:
        await asyncio.wait([acquiring, stopping], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not acquiring.done():
            acquiring.cancel()  # asyncio.Lock passes a turn it was given meanwhile to the next in line
            await asyncio.wait([acquiring])
    return not acquiring.cancelled() and acquiring.exception() is None


def _release_local(taken: list[asyncio.Lock]) -> None:
    for local in taken:
        local.release()


@asynccontextmanager
async def event_locks(gateway: RedisGateway, settings: Settings, event_ids: Iterable[int]) -> AsyncIterator[bool]:
    """Hold the Redis locks of every given event for the body; yields whether they are held.

    All locks are first tried at once (one round trip when nobody else holds them). On
    contention everything is let go and the locks are taken one by one in event order, the
    classic way to never deadlock with another instance doing the same.
    """
    async with _locks_taken(gateway, settings, event_ids, _acquire_all) as held:
        yield held is not None


@asynccontextmanager
async def free_event_locks(
    gateway: RedisGateway, settings: Settings, event_ids: Iterable[int], patience: Patience
) -> AsyncIterator[frozenset[int]]:
    """Hold the Redis locks of those of the events that are free now; yields the events held.

    For a batch of many events' bookings: the free events go on without waiting long for a busy
    one. A busy lock is waited for `BRIEF_WAIT_SECONDS` at most, in event order, holding only the
    locks before it (so it cannot deadlock), then left. Only when none is free does it try them all
    again every LOCK_POLL_SECONDS, as long as `patience` lasts, and yields no event if none came
    free. With Redis unreachable it yields every event, as `event_locks` goes on without the locks.
    """
    ids = frozenset(event_ids)
    if not ids:
        yield ids
        return

    async def take(client: Redis, locks: dict[int, Lock], lifetime_ms: int) -> list[int]:
        return await _take_free(client, locks, lifetime_ms, patience, settings.lock_poll_seconds)

    async with _locks_taken(gateway, settings, ids, take) as held:
        yield ids if held is None else held


Take = Callable[[Redis, dict[int, Lock], int], Awaitable[list[int]]]


@asynccontextmanager
async def _locks_taken(
    gateway: RedisGateway, settings: Settings, event_ids: Iterable[int], take: Take
) -> AsyncIterator[frozenset[int] | None]:
    """The events whose locks `take` got, held for the body and then released; None when Redis is
    unreachable (the body goes on without them, and that is logged and counted)."""
    locks = {event_id: _lock(gateway, settings, event_id) for event_id in sorted(set(event_ids))}
    lifetime_ms = max(1, int(settings.lock_timeout_seconds * 1000))
    started = time.perf_counter()
    try:
        held = await gateway.call("lock_acquire", lambda client: take(client, locks, lifetime_ms))
    except RedisUnavailable:
        metrics.LOCK_ACQUISITIONS.labels("redis_unavailable").inc(len(locks))
        log.warning("event_lock_skipped_redis_unavailable", event_ids=list(locks))
        yield None
        return
    metrics.LOCK_WAIT.observe(time.perf_counter() - started)
    metrics.LOCK_ACQUISITIONS.labels("acquired").inc(len(held))
    try:
        yield frozenset(held)
    finally:
        await _release_all(gateway, {event_id: locks[event_id] for event_id in held})


async def _acquire_all(client: Redis, locks: dict[int, Lock], lifetime_ms: int) -> list[int]:
    """Every lock (`event_locks`), or LockTimeoutError."""
    held = await _try_all_at_once(client, locks, lifetime_ms)
    if all(held):
        return list(locks)
    await _release_held(client, [lock for lock, ok in zip(locks.values(), held, strict=True) if ok])
    taken: list[Lock] = []
    for event_id, lock in locks.items():
        if not await lock.acquire():
            await _release_held(client, taken)
            metrics.LOCK_ACQUISITIONS.labels("timeout").inc()
            raise LockTimeoutError(event_id)
        taken.append(lock)
    return list(locks)


# How long a batch with free events waits for its busy ones: about one of another worker's batch
# transactions under load. Most busy locks come free in that time, and the batch books them all
# together; one held longer (a stuck or dead holder) is left to the next batch.
BRIEF_WAIT_SECONDS = 0.02


async def _take_free(
    client: Redis, locks: dict[int, Lock], lifetime_ms: int, patience: Patience, poll_seconds: float
) -> list[int]:
    """The events whose locks were free (`free_event_locks`)."""
    taken = await _taken_now(client, locks, lifetime_ms)
    if any(taken.values()) and not all(taken.values()):
        await _wait_in_order(client, locks, taken, lifetime_ms, patience.at_most(BRIEF_WAIT_SECONDS), poll_seconds)
    while not any(taken.values()) and patience.lasts():
        await asyncio.sleep(poll_seconds)
        taken = await _taken_now(client, locks, lifetime_ms)
    return [event_id for event_id, ok in taken.items() if ok]


async def _wait_in_order(
    client: Redis,
    locks: dict[int, Lock],
    taken: dict[int, bool],
    lifetime_ms: int,
    brief: Patience,
    poll_seconds: float,
) -> None:
    """Wait briefly for the busy locks, in event order, holding only earlier ones while waiting."""
    for event_id, lock in locks.items():
        if taken[event_id] or not brief.lasts():
            continue
        later = {other: locks[other] for other in locks if other > event_id and taken[other]}
        await _release_held(client, list(later.values()))
        taken.update(dict.fromkeys(later, False))
        while not taken[event_id] and brief.lasts():
            await asyncio.sleep(poll_seconds)
            taken |= await _taken_now(client, {event_id: lock}, lifetime_ms)
        rest = {other: locks[other] for other in locks if other > event_id}
        if rest:
            taken |= await _taken_now(client, rest, lifetime_ms)


async def _taken_now(client: Redis, locks: dict[int, Lock], lifetime_ms: int) -> dict[int, bool]:
    """Whether each event's lock was free and is now taken (`_try_all_at_once`)."""
    return dict(zip(locks, await _try_all_at_once(client, locks, lifetime_ms), strict=True))


# KEYS: the locks; ARGV[1]: the holder's token, ARGV[2]: the locks' lifetime (ms). An answer per
# lock: 1 if it was free and is now taken, as redis-py's Lock.acquire(blocking=False) does for one.
TAKE_FREE = """
local taken = {}
for i, key in ipairs(KEYS) do
  taken[i] = redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
end
return taken
"""

# KEYS: the locks; ARGV[i]: the token KEYS[i] was taken with. An answer per lock: 1 if it was still
# held with that token and is now released, as redis-py's Lock.release() does for one.
RELEASE_OWNED = """
local owned = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    redis.call('DEL', key)
    owned[i] = 1
  else
    owned[i] = 0
  end
end
return owned
"""


async def _try_all_at_once(client: Redis, locks: dict[int, Lock], lifetime_ms: int) -> list[bool]:
    """Lock.acquire(blocking=False) for every lock, in one script call (one per slot on a Cluster)
    instead of a command each.

    It takes each free lock with one fresh token for them all and records the token where the
    Lock keeps it, so `Lock.release()` works as usual afterwards.
    """
    token = uuid.uuid4().hex.encode()  # this holder's, in every lock it takes at once
    names = [_name(lock) for lock in locks.values()]
    pipe = client.pipeline(transaction=False)
    positions = queue_script_per_slot(pipe, TAKE_FREE, names, [() for _ in names], shared=[token, lifetime_ms])
    taken = per_key(positions, await pipe.execute())
    for lock, ok in zip(locks.values(), taken, strict=True):
        if ok:
            lock.local.token = token
    return [bool(ok) for ok in taken]


async def _release_held(client: Redis, locks: list[Lock]) -> list[bool]:
    """Lock.release() for every lock, in one script call (one per slot on a Cluster); answers
    which were still owned."""
    if not locks:
        return []
    pipe = client.pipeline(transaction=False)
    tokens = [[lock.local.token] for lock in locks]
    positions = queue_script_per_slot(pipe, RELEASE_OWNED, [_name(lock) for lock in locks], tokens)
    for lock in locks:
        lock.local.token = None
    return [bool(owned) for owned in per_key(positions, await pipe.execute())]


async def _release_all(gateway: RedisGateway, locks: dict[int, Lock]) -> None:
    try:
        owned = await gateway.call("lock_release", lambda client: _release_held(client, list(locks.values())))
    except RedisUnavailable:
        log.warning("event_lock_release_failed_redis_unavailable", event_ids=list(locks))
        return
    for event_id, still_owned in zip(locks, owned, strict=True):
        if not still_owned:
            log.warning("event_lock_expired_before_release", event_id=event_id)
