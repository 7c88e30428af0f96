"""The auth service's deny list in Redis (`revoked:jti:<jti>`, `revoked:user:<id>`).

A "not revoked" answer from Redis is remembered for `AUTH_REVOCATION_CACHE_SECONDS` (default 1 s)
per token, so a busy client costs one Redis round trip a second rather than one per request; a
revocation takes effect within that time. Checks of the same token that arrive while its lookup
is under way wait for that lookup instead of starting their own (single flight). An answer given
without asking Redis is never remembered: with Redis down the check follows
`AUTH_REDIS_FAILURE_MODE`; with Redis busy (no pooled connection free in time) the request is
answered 503 `service_busy` with `Retry-After`, whatever the mode, since a burst must not switch
the deny list off.
"""

from __future__ import annotations

import asyncio
import time
from enum import Enum

from app.core import metrics
from app.core.config import RedisFailureMode, Settings
from app.core.errors import RedisBusyError, ServiceUnavailableError, TokenRevokedError
from app.core.logging import get_logger
from app.core.security import Principal
from app.db.redis import RedisGateway, RedisPoolTimeoutError, RedisUnavailable

log = get_logger(__name__)
TokenKey = tuple[int, str | None]


class Verdict(Enum):
    VALID = "valid"
    REVOKED = "revoked"
    UNCHECKED = "unchecked"  # Redis unreachable
    BUSY = "busy"  # no Redis connection free in time


class RevocationChecker:
    def __init__(self, settings: Settings, redis: RedisGateway, max_entries: int = 10_000) -> None:
        self._ttl = settings.auth_revocation_cache_seconds
        self._failure_mode = settings.auth_redis_failure_mode
        self._redis = redis
        self._max_entries = max_entries
        self._checked: dict[TokenKey, float] = {}
        self._in_flight: dict[TokenKey, asyncio.Task[Verdict]] = {}

    async def check(self, principal: Principal) -> None:
        key = (principal.user_id, principal.jti)
        if self._checked.get(key, 0.0) > time.monotonic():
            return
        verdict = await self._shared_lookup(key, principal)
        if verdict is Verdict.REVOKED:
            raise TokenRevokedError("The access token has been revoked")
        if verdict is Verdict.BUSY:
            raise RedisBusyError()
        if verdict is Verdict.UNCHECKED:
            self._unchecked(principal)

    async def _shared_lookup(self, key: TokenKey, principal: Principal) -> Verdict:
        """The token's verdict, from the lookup already under way for it or a new one. The lookup
        runs as a task of its own, so a waiter that goes away does not cancel it for the others."""
        lookup = self._in_flight.get(key)
        if lookup is None:
            lookup = asyncio.create_task(self._lookup(key, principal))
            self._in_flight[key] = lookup
            lookup.add_done_callback(lambda done: self._forget_lookup(key, done))
        return await asyncio.shield(lookup)

    def _forget_lookup(self, key: TokenKey, done: asyncio.Task[Verdict]) -> None:
        if self._in_flight.get(key) is done:
            del self._in_flight[key]

    async def _lookup(self, key: TokenKey, principal: Principal) -> Verdict:
        keys = [f"revoked:user:{principal.user_id}"]
        if principal.jti:
            keys.append(f"revoked:jti:{principal.jti}")
        try:
            found = await self._redis.call("auth_deny_list", lambda client: client.exists(*keys))
        except RedisPoolTimeoutError:
            return Verdict.BUSY
        except RedisUnavailable:
            return Verdict.UNCHECKED
        if found:
            return Verdict.REVOKED
        self._remember(key)
        return Verdict.VALID

    def _remember(self, key: TokenKey) -> None:
        if self._ttl <= 0:
            return
        if len(self._checked) >= self._max_entries:
            self._checked.clear()
        self._checked[key] = time.monotonic() + self._ttl

    def _unchecked(self, principal: Principal) -> None:
        metrics.AUTH_REVOCATION_UNCHECKED.inc()
        if self._failure_mode is RedisFailureMode.DENY:
            raise ServiceUnavailableError("Token revocation cannot be checked right now")
        log.warning("token_revocation_unchecked", user_id=principal.user_id)
