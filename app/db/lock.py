"""The per-event lock (SPEC section 2): redis-py's Lock, bounded wait, never required for safety.

PostgreSQL's constraints keep the capacity invariant; the lock only keeps instances from piling
onto the same row. When Redis is unreachable the caller proceeds without it and that is logged,
counted and reported as degraded health.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from app.core import metrics
from app.core.config import Settings
from app.core.errors import ServiceUnavailableError
from app.core.logging import get_logger
from app.db.redis import RedisGateway, RedisUnavailable

log = get_logger(__name__)


class LockTimeoutError(ServiceUnavailableError):
    code = "lock_timeout"
    title = "Event busy"

    def __init__(self, event_id: int) -> None:
        super().__init__(f"Event {event_id} is busy, try again shortly", headers={"Retry-After": "1"})


@asynccontextmanager
async def event_lock(gateway: RedisGateway, settings: Settings, event_id: int) -> AsyncIterator[bool]:
    """Hold the event's lock for the body; yields whether the lock is really held."""
    lock = Lock(
        gateway.client,
        gateway.key("lock", "event", event_id),
        timeout=settings.lock_timeout_seconds,
        sleep=settings.lock_poll_seconds,
        blocking_timeout=settings.lock_wait_seconds,
        thread_local=False,
    )
    started = time.perf_counter()
    try:
        acquired = await gateway.call("lock_acquire", lambda _client: lock.acquire())
    except RedisUnavailable:
        metrics.LOCK_ACQUISITIONS.labels("redis_unavailable").inc()
        log.warning("event_lock_skipped_redis_unavailable", event_id=event_id)
        yield False
        return
    metrics.LOCK_WAIT.observe(time.perf_counter() - started)
    if not acquired:
        metrics.LOCK_ACQUISITIONS.labels("timeout").inc()
        raise LockTimeoutError(event_id)
    metrics.LOCK_ACQUISITIONS.labels("acquired").inc()
    try:
        yield True
    finally:
        try:
            await gateway.call("lock_release", lambda _client: lock.release())
        except LockError:
            log.warning("event_lock_expired_before_release", event_id=event_id)
        except RedisUnavailable:
            log.warning("event_lock_release_failed_redis_unavailable", event_id=event_id)
