"""One Redis client for the service, guarded by a circuit breaker.

The client's pool holds at most `REDIS_MAX_CONNECTIONS` connections; when all are busy a call waits
up to `REDIS_POOL_TIMEOUT_SECONDS` for one. A wait that runs out is load, not an outage: it raises
`RedisPoolTimeoutError`, which the breaker does not count (it is still a `ConnectionError`, so code
that merely degrades without Redis degrades the same way).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core import metrics
from app.core.circuit_breaker import CircuitBreaker, CircuitOpenError
from app.core.config import Settings
from app.core.logging import get_logger

T = TypeVar("T")
MAX_RECONNECT_PAUSE_SECONDS = 10.0
log = get_logger(__name__)

REDIS_FAILURES: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    OSError,
)
# What a caller catches to mean "Redis is not there right now".
RedisUnavailable: tuple[type[BaseException], ...] = (*REDIS_FAILURES, CircuitOpenError)


class RedisPoolTimeoutError(MaxConnectionsError):
    """Every pooled connection stayed busy for REDIS_POOL_TIMEOUT_SECONDS: Redis is busy, not down."""


class WaitingConnectionPool(BlockingConnectionPool):
    """redis-py's blocking pool, raising `RedisPoolTimeoutError` when the wait for a connection
    runs out (redis-py raises a plain `ConnectionError`, the same as for a refused connection)."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call,no-any-return]
        except RedisConnectionError as exc:
            if type(exc) is RedisConnectionError and isinstance(exc.__cause__, TimeoutError):
                raise RedisPoolTimeoutError(f"no Redis connection free within {self.timeout} s") from exc
            raise


def create_client(settings: Settings) -> Redis:
    """The service's shared client (one pool per process)."""
    pool = WaitingConnectionPool.from_url(
        settings.redis_connection_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_seconds,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        health_check_interval=30,
        decode_responses=False,
    )
    return Redis.from_pool(pool)


def _report_circuit(opened: bool) -> None:
    metrics.REDIS_CIRCUIT_OPEN.set(1 if opened else 0)
    if opened:
        log.warning("redis_circuit_opened")
    else:
        log.info("redis_circuit_closed")


class RedisGateway:
    """The Redis client plus the breaker every call goes through, and the key prefix."""

    def __init__(self, settings: Settings) -> None:
        self.client = create_client(settings)
        self.breaker = CircuitBreaker(
            settings.redis_breaker_failure_threshold,
            settings.redis_breaker_reset_seconds,
            REDIS_FAILURES,
            on_state_change=_report_circuit,
            not_failures=(RedisPoolTimeoutError,),
        )
        self.prefix = settings.redis_key_prefix
        self._url = settings.redis_connection_url
        self._connect_timeout = settings.redis_socket_timeout_seconds

    @asynccontextmanager
    async def subscription(self, *channels: str) -> AsyncIterator[PubSub]:
        """Subscribed to `channels` on a connection of its own (no read timeout while it waits),
        closed on the way out however the body ends."""
        client = Redis.from_url(
            self._url,
            socket_connect_timeout=self._connect_timeout,
            socket_keepalive=True,
            health_check_interval=15,
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            yield pubsub
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()

    async def keep_subscribed(
        self, channels: Sequence[str], listen: Callable[[PubSub], Awaitable[None]], name: str
    ) -> None:
        """Subscribe and run `listen` until it returns. When the subscription or `listen` fails,
        subscribe again after a pause that doubles each time (0.5 s once a subscription worked)."""
        backoff = 0.5
        while True:
            try:
                async with self.subscription(*channels) as pubsub:
                    backoff = 0.5
                    await listen(pubsub)
                    return
            except Exception as exc:  # Redis gone, or anything else: reconnect after a pause
                log.warning("subscription_reconnecting", subscriber=name, error=type(exc).__name__, backoff=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RECONNECT_PAUSE_SECONDS)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(part) for part in parts)

    async def call(self, name: str, operation: Callable[[Redis], Awaitable[T]]) -> T:
        try:
            return await self.breaker.call(lambda: operation(self.client))
        except RedisPoolTimeoutError:
            metrics.REDIS_POOL_TIMEOUTS.labels(name).inc()
            raise
        except REDIS_FAILURES:
            metrics.REDIS_FAILURES.labels(name).inc()
            raise

    @property
    def available(self) -> bool:
        return not self.breaker.is_open

    async def close(self) -> None:
        await self.client.aclose()
