"""What the services need from the running application, created once in the lifespan."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.revocation import RevocationChecker
from app.core.security import TokenVerifier
from app.db.lock import EventLocks
from app.db.redis import RedisGateway

if TYPE_CHECKING:
    from app.models.event_availability import EventAvailability
    from app.services.booking_batcher import BookingBatcher

AvailabilityListener = Callable[["EventAvailability"], Awaitable[None]]


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: RedisGateway
    locks: EventLocks = field(init=False)
    tokens: TokenVerifier = field(init=False)
    revocations: RevocationChecker = field(init=False)
    batcher: BookingBatcher = field(init=False)
    outbox_listeners: list[Callable[[], None]] = field(default_factory=list)
    availability_listeners: list[AvailabilityListener] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.locks = EventLocks(self.redis, self.settings)
        self.tokens = TokenVerifier(self.settings)
        self.revocations = RevocationChecker(self.settings, self.redis)

    async def after_commit(self, session: AsyncSession) -> None:
        """Side effects of a committed transaction: wake the relay, refresh caches and streams."""
        if session.info.pop("outbox_written", False):
            for wake in self.outbox_listeners:
                wake()
        events: dict[int, EventAvailability] = session.info.pop("events", {})
        for event in events.values():
            for listener in self.availability_listeners:
                await listener(event)
