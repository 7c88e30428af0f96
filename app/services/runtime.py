"""What the services need from the running application, created once in the lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.logging import get_logger
from app.core.security import TokenVerifier
from app.db.lock import EventLocks
from app.db.redis import RedisGateway, RedisUnavailable
from app.db.session import create_sessionmaker
from app.schemas.availability import EventAvailabilityRead
from app.services.availability_cache import AvailabilityCache
from app.services.availability_feed import AvailabilityFeed
from app.services.rate_limit import WriteRateLimiter
from app.services.revocation import RevocationChecker
from app.services.stream_limits import StreamLimits
from app.services.waiting_line import WaitingLine

log = get_logger(__name__)

if TYPE_CHECKING:
    from app.models.event_availability import EventAvailability
    from app.services.booking_batcher import BookingBatcher


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: RedisGateway
    read_engine: AsyncEngine | None = None  # DATABASE_READ_URL's replicas, when set
    # Reads that may lag (admin lists, overview, audit); the primary's sessionmaker without replicas.
    read_sessionmaker: async_sessionmaker[AsyncSession] = field(init=False)
    locks: EventLocks = field(init=False)
    tokens: TokenVerifier = field(init=False)
    revocations: RevocationChecker = field(init=False)
    rate_limiter: WriteRateLimiter = field(init=False)
    cache: AvailabilityCache = field(init=False)
    feed: AvailabilityFeed = field(init=False)
    streams: StreamLimits = field(init=False)
    waiting_line: WaitingLine = field(init=False)
    batcher: BookingBatcher = field(init=False)
    outbox_listeners: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.read_sessionmaker = create_sessionmaker(self.read_engine) if self.read_engine else self.sessionmaker
        self.locks = EventLocks(self.redis, self.settings)
        self.tokens = TokenVerifier(self.settings)
        self.revocations = RevocationChecker(self.settings, self.redis)
        self.rate_limiter = WriteRateLimiter(self.redis, self.settings.rate_limit_per_minute)
        self.cache = AvailabilityCache(self.redis, self.settings.availability_cache_ttl_seconds)
        self.feed = AvailabilityFeed(self.redis)
        self.streams = StreamLimits(self.settings, self.redis, self.revocations)
        self.waiting_line = WaitingLine(self.redis)

    async def after_commit(self, session: AsyncSession) -> None:
        """Side effects of a committed transaction: wake the relay, refresh the cache and feed."""
        if session.info.pop("outbox_written", False):
            for wake in self.outbox_listeners:
                wake()
        events: dict[int, EventAvailability] = session.info.pop("events", {})
        expiries: dict[int, datetime] = session.info.pop("hold_expiries", {})
        if not events:
            return
        updates = [EventAvailabilityRead.model_validate(event).model_dump(mode="json") for event in events.values()]

        async def send(client: Any) -> None:  # cache and feed in one round trip
            pipe = client.pipeline(transaction=False)
            await self.cache.queue_stores(pipe, [(figures, expiries.get(figures["event_id"])) for figures in updates])
            self.feed.queue_publish(pipe, updates)
            await pipe.execute()

        try:
            await self.redis.call("availability_refresh", send)
        except RedisUnavailable:
            log.info("availability_refresh_skipped", events=len(updates))
