"""The auth service's deny list in Redis (`revoked:jti:<jti>`, `revoked:user:<id>`).

Answers are remembered for `AUTH_REVOCATION_CACHE_SECONDS` (default 1 s) per token, so a busy
client costs one Redis round trip a second rather than one per request; a revocation takes
effect within that time.
"""

from __future__ import annotations

import time

from app.core import metrics
from app.core.config import RedisFailureMode, Settings
from app.core.errors import ServiceUnavailableError, UnauthorizedError
from app.core.logging import get_logger
from app.core.security import Principal
from app.db.redis import RedisGateway, RedisUnavailable

log = get_logger(__name__)


class RevocationChecker:
    def __init__(self, settings: Settings, redis: RedisGateway, max_entries: int = 10_000) -> None:
        self._ttl = settings.auth_revocation_cache_seconds
        self._failure_mode = settings.auth_redis_failure_mode
        self._redis = redis
        self._max_entries = max_entries
        self._checked: dict[tuple[int, str | None], float] = {}

    async def check(self, principal: Principal) -> None:
        key = (principal.user_id, principal.jti)
        now = time.monotonic()
        if self._checked.get(key, 0.0) > now:
            return
        if await self._is_revoked(principal):
            raise UnauthorizedError("The access token has been revoked", code="token_revoked")
        if self._ttl > 0:
            if len(self._checked) >= self._max_entries:
                self._checked.clear()
            self._checked[key] = now + self._ttl

    async def _is_revoked(self, principal: Principal) -> bool:
        keys = [f"revoked:user:{principal.user_id}"]
        if principal.jti:
            keys.append(f"revoked:jti:{principal.jti}")
        try:
            found = await self._redis.call("auth_deny_list", lambda client: client.exists(*keys))
        except RedisUnavailable:
            metrics.AUTH_REVOCATION_UNCHECKED.inc()
            if self._failure_mode is RedisFailureMode.DENY:
                raise ServiceUnavailableError("Token revocation cannot be checked right now") from None
            log.warning("token_revocation_unchecked", user_id=principal.user_id)
            return False
        return bool(found)
