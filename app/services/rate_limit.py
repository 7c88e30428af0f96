"""Per-user limit on write requests: a fixed one-minute window counted in Redis.

Off when `RATE_LIMIT_PER_MINUTE` is 0. With Redis unreachable requests are let through: the limit
protects the service, it must not take it down. With Redis busy (no pooled connection free within
`REDIS_POOL_TIMEOUT_SECONDS`) the request is answered 503 `service_busy` with `Retry-After`: a burst
is exactly what the limit is for, so it is never skipped for load.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from app.core.errors import RateLimitedError, RedisBusyError
from app.db.redis import RedisGateway, RedisPoolTimeoutError, RedisUnavailable

WINDOW_SECONDS = 60


class WriteRateLimiter:
    def __init__(self, gateway: RedisGateway, per_minute: int) -> None:
        self._gateway = gateway
        self._per_minute = per_minute

    async def check(self, user_id: int) -> None:
        if self._per_minute <= 0:
            return
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = self._gateway.key("ratelimit", user_id, window)

        async def count(client: Redis) -> int:
            pipe = client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS * 2)
            used, _ = await pipe.execute()
            return int(used)

        try:
            used = await self._gateway.call("rate_limit", count)
        except RedisPoolTimeoutError:
            raise RedisBusyError() from None
        except RedisUnavailable:
            return
        if used > self._per_minute:
            retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now))
            raise RateLimitedError(
                f"More than {self._per_minute} changes a minute; try again in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
