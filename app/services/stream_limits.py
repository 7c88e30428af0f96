"""Who may keep a live availability stream open, and for how long.

At most `SSE_MAX_STREAMS_PER_INSTANCE` streams per instance and `SSE_MAX_STREAMS_PER_USER` per
user across all instances: each stream holds a lease in a Redis sorted set per user (member: the
stream's id, score: when the lease lapses), renewed every `SSE_HEARTBEAT_SECONDS` and removed when
the stream ends, so the streams of an instance that died stop counting once their leases lapse.
With Redis unreachable or busy the user's streams are counted in this instance only.

A stream ends at its token's `exp`, and when the deny list names its token or user: the list is
asked again every `SSE_HEARTBEAT_SECONDS` (through the revocation check, so its cache applies).
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections import Counter

import anyio
from redis.asyncio import Redis

from app.core.config import Settings
from app.core.errors import ServiceUnavailableError, TooManyStreamsError, UnauthorizedError
from app.core.logging import get_logger
from app.core.security import Principal
from app.db.redis import RedisGateway, RedisUnavailable
from app.services.revocation import RevocationChecker

log = get_logger(__name__)
RETRY_AFTER_SECONDS = 5
LEASES_PER_HEARTBEAT = 3  # a lease outlives a missed renewal or two
RELEASE_WAIT_SECONDS = 1.0

# KEYS[1] the user's leases; ARGV: now (ms), the cap, the new lease's end (ms), its id, key lifetime (ms)
TAKE_LEASE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class StreamLimits:
    """The streams of this instance, and the admission of new ones."""

    def __init__(self, settings: Settings, gateway: RedisGateway, revocations: RevocationChecker) -> None:
        self._per_user = settings.sse_max_streams_per_user
        self._per_instance = settings.sse_max_streams_per_instance
        self.renew_seconds = settings.sse_heartbeat_seconds
        self._lease_ms = int(LEASES_PER_HEARTBEAT * settings.sse_heartbeat_seconds * 1000)
        self._gateway = gateway
        self._revocations = revocations
        self._take_lease = gateway.client.register_script(TAKE_LEASE)
        self._open: Counter[int] = Counter()  # this instance's streams by user

    async def open(self, principal: Principal) -> StreamSession:
        """Admit a new stream of `principal`, or refuse it with 429."""
        if self._open.total() >= self._per_instance:
            raise TooManyStreamsError(
                "This instance serves as many live streams as it can; try again shortly", RETRY_AFTER_SECONDS
            )
        session = StreamSession(self, principal)
        user_id = principal.user_id
        self._open[user_id] += 1  # counted before waiting for Redis, so simultaneous opens see it
        try:
            granted = await self._take(session)
        except BaseException:  # cancelled, or a bug: the slot is not kept
            self._forget(user_id)
            raise
        if granted is None:  # Redis unreachable or busy: this instance's streams only
            granted = self._open[user_id] <= self._per_user
        if not granted:
            self._forget(user_id)
            raise TooManyStreamsError(
                f"At most {self._per_user} live streams per user; close one first", RETRY_AFTER_SECONDS
            )
        return session

    def leases_key(self, user_id: int) -> str:
        return self._gateway.key("sse", "user", user_id)

    async def _take(self, session: StreamSession) -> bool | None:
        """Take a lease for the session if the user has fewer than the cap; None without Redis."""
        key = self.leases_key(session.principal.user_id)
        now_ms = int(time.time() * 1000)
        args: list[int | str] = [now_ms, self._per_user, now_ms + self._lease_ms, session.id, self._lease_ms]
        try:
            granted = await self._gateway.call("sse_lease", lambda client: self._take_lease([key], args, client))
        except RedisUnavailable:
            log.info("sse_lease_unchecked", user_id=session.principal.user_id)
            return None
        return bool(granted)

    async def renew(self, session: StreamSession) -> None:
        """Extend the session's lease (taken again if it lapsed while Redis was away)."""
        key = self.leases_key(session.principal.user_id)

        async def extend(client: Redis) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.zadd(key, {session.id: int(time.time() * 1000) + self._lease_ms})
            pipe.pexpire(key, self._lease_ms)
            await pipe.execute()

        with contextlib.suppress(*RedisUnavailable):
            await self._gateway.call("sse_lease", extend)

    def _forget(self, user_id: int) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]

    async def close(self, session: StreamSession) -> None:
        """The stream ended: it stops counting here at once, and in Redis if it answers soon."""
        self._forget(session.principal.user_id)
        key = self.leases_key(session.principal.user_id)
        # Shielded: a stream usually ends because its client went away, cancelling the response.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(RELEASE_WAIT_SECONDS),
            contextlib.suppress(*RedisUnavailable),  # the lease lapses by itself
        ):
            await self._gateway.call("sse_release", lambda client: client.zrem(key, session.id))

    async def still_allowed(self, principal: Principal) -> bool:
        """False when the deny list now names the token or its user."""
        try:
            await self._revocations.check(principal)
        except UnauthorizedError:
            return False
        except ServiceUnavailableError:  # not known now: asked again at the next renewal
            pass
        return True


class StreamSession:
    """One live stream: ends at its token's expiry or revocation; renews its lease meanwhile."""

    def __init__(self, limits: StreamLimits, principal: Principal) -> None:
        self.id = uuid.uuid4().hex
        self.principal = principal
        self.end_reason: str | None = None
        self._limits = limits
        self._next_renewal = time.monotonic() + limits.renew_seconds

    def wait_at_most(self, seconds: float) -> float:
        """`seconds`, or less when the token expires sooner."""
        expires_at = self.principal.expires_at
        left = math.inf if expires_at is None else expires_at - time.time()
        return max(0.0, min(seconds, left))

    async def live(self) -> bool:
        """Whether the stream may go on: its token is unexpired and (checked every renewal) not revoked."""
        expires_at = self.principal.expires_at
        if expires_at is not None and time.time() >= expires_at:
            self.end_reason = "token_expired"
            return False
        if time.monotonic() < self._next_renewal:
            return True
        self._next_renewal = time.monotonic() + self._limits.renew_seconds
        if not await self._limits.still_allowed(self.principal):
            self.end_reason = "token_revoked"
            return False
        await self._limits.renew(self)
        return True

    async def close(self) -> None:
        await self._limits.close(self)
