"""The auth service's deny list in Redis (`revoked:jti:<jti>`, `revoked:user:<id>`).

A "not revoked" answer from Redis is remembered for `AUTH_REVOCATION_CACHE_SECONDS` (default 1 s)
per token, so a busy client costs one Redis round trip a second rather than one per request; a
revocation takes effect within that time. Checks of the same token that arrive while its lookup
is under way wait for that lookup instead of starting their own (single flight), and the lookups of
different tokens share round trips: those queued while one is under way go together in the next
(one pipeline), so a rush of users never seen before costs a fraction of a round trip each. An answer given
without asking Redis is never remembered: with Redis down the check follows
`AUTH_REDIS_FAILURE_MODE`; with Redis busy (no pooled connection free in time) the request is
answered 503 `service_busy` with `Retry-After`, whatever the mode, since a burst must not switch
the deny list off.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Iterable
from enum import Enum
from typing import Any

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
        self._in_flight: dict[TokenKey, asyncio.Future[Verdict]] = {}
        self._queued: dict[TokenKey, list[str]] = {}  # deny-list keys of the tokens for the next round trip
        self._sender: asyncio.Task[None] | None = None

    async def check(self, principal: Principal) -> None:
        key = (principal.user_id, principal.jti)
        if self._checked.get(key, 0.0) > time.monotonic():
            return
        # Shielded: a waiter that goes away does not cancel the lookup for the others.
        verdict = await asyncio.shield(self._lookup_of(key, principal))
        if verdict is Verdict.REVOKED:
            raise TokenRevokedError("The access token has been revoked")
        if verdict is Verdict.BUSY:
            raise RedisBusyError()
        if verdict is Verdict.UNCHECKED:
            self._unchecked(principal)

    def _lookup_of(self, key: TokenKey, principal: Principal) -> asyncio.Future[Verdict]:
        """The token's lookup already under way, or a new one queued for the next round trip."""
        lookup = self._in_flight.get(key)
        if lookup is None:
            lookup = asyncio.get_running_loop().create_future()
            self._in_flight[key] = lookup
            self._queued[key] = _deny_list_keys(principal)
            if self._sender is None:
                # A fresh context: the round trip serves many requests, not the first one's.
                self._sender = asyncio.create_task(self._send_queued(), context=contextvars.Context())
        return lookup

    async def _send_queued(self) -> None:
        """Ask Redis about every queued token in one round trip; tokens queued while it is under way
        go in the next. Under load each round trip answers many requests' checks at once."""
        try:
            while self._queued:
                batch, self._queued = self._queued, {}
                try:
                    verdicts = await self._ask(batch)
                except Exception as exc:  # a bug, not Redis: never leave a check waiting for it
                    log.exception("deny_list_lookup_failed", tokens=len(batch))
                    self._fail(batch, exc)
                    continue
                except BaseException:  # cancelled (shutdown): so are the checks waiting for it
                    for key in batch:
                        self._in_flight.pop(key).cancel()
                    raise
                self._settle(verdicts)
        finally:
            self._sender = None

    def _settle(self, verdicts: dict[TokenKey, Verdict]) -> None:
        for key, verdict in verdicts.items():
            if verdict is Verdict.VALID:
                self._remember(key)
            self._in_flight.pop(key).set_result(verdict)

    def _fail(self, keys: Iterable[TokenKey], error: Exception) -> None:
        for key in keys:
            self._in_flight.pop(key).set_exception(error)

    async def _ask(self, batch: dict[TokenKey, list[str]]) -> dict[TokenKey, Verdict]:
        async def exists_each(client: Any) -> list[int]:
            pipe = client.pipeline(transaction=False)
            for keys in batch.values():
                for name in keys:  # one key a command: under Redis Cluster the keys may be in other slots
                    pipe.exists(name)
            found: list[int] = await pipe.execute()
            return found

        try:
            found = await self._redis.call("auth_deny_list", exists_each)
        except RedisPoolTimeoutError:
            return dict.fromkeys(batch, Verdict.BUSY)
        except RedisUnavailable:
            return dict.fromkeys(batch, Verdict.UNCHECKED)
        verdicts, position = {}, 0
        for key, keys in batch.items():
            revoked = any(found[position : position + len(keys)])
            verdicts[key] = Verdict.REVOKED if revoked else Verdict.VALID
            position += len(keys)
        return verdicts

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


def _deny_list_keys(principal: Principal) -> list[str]:
    keys = [f"revoked:user:{principal.user_id}"]
    if principal.jti:
        keys.append(f"revoked:jti:{principal.jti}")
    return keys
