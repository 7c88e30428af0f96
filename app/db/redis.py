"""One Redis client for the service, guarded by a circuit breaker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
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


def _report_circuit(opened: bool) -> None:
    metrics.REDIS_CIRCUIT_OPEN.set(1 if opened else 0)
    if opened:
        log.warning("redis_circuit_opened")
    else:
        log.info("redis_circuit_closed")


class RedisGateway:
    """The Redis client plus the breaker every call goes through, and the key prefix."""

    def __init__(self, settings: Settings) -> None:
        self.client: Redis = Redis.from_url(
            settings.redis_connection_url,
            socket_timeout=settings.redis_socket_timeout_seconds,
            socket_connect_timeout=settings.redis_socket_timeout_seconds,
            health_check_interval=30,
            decode_responses=False,
        )
        self.breaker = CircuitBreaker(
            settings.redis_breaker_failure_threshold,
            settings.redis_breaker_reset_seconds,
            REDIS_FAILURES,
            on_state_change=_report_circuit,
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
        except REDIS_FAILURES:
            metrics.REDIS_FAILURES.labels(name).inc()
            raise

    @property
    def available(self) -> bool:
        return not self.breaker.is_open

    async def close(self) -> None:
        await self.client.aclose()
