"""The infrastructure the services stand on: settings, the database engines, Redis, the event locks.

Created once per process (the application's lifespan); it knows nothing of the services.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.db.lock import EventLocks
from app.db.redis import RedisGateway
from app.db.session import create_engine, create_read_engine, create_sessionmaker


@dataclass
class Infrastructure:
    settings: Settings
    engine: AsyncEngine
    redis: RedisGateway
    read_engine: AsyncEngine | None = None  # DATABASE_READ_URL's replicas, when set
    sessionmaker: async_sessionmaker[AsyncSession] = field(init=False)
    # Reads that may lag (admin lists, overview, audit); the primary's sessionmaker without replicas.
    read_sessionmaker: async_sessionmaker[AsyncSession] = field(init=False)
    locks: EventLocks = field(init=False)

    def __post_init__(self) -> None:
        self.sessionmaker = create_sessionmaker(self.engine)
        self.read_sessionmaker = create_sessionmaker(self.read_engine) if self.read_engine else self.sessionmaker
        self.locks = EventLocks(self.redis, self.settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings, create_engine(settings), RedisGateway(settings), create_read_engine(settings))

    async def close(self) -> None:
        await self.redis.close()
        await self.engine.dispose()
        if self.read_engine is not None:
            await self.read_engine.dispose()
