"""The async engine and sessionmaker, created in the application's lifespan."""

from __future__ import annotations

import orjson
from sqlalchemy import Pool, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.core import metrics
from app.core.config import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        settings.sqlalchemy_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=True,
        # Audit rows and outbox messages are JSONB written on every booking: orjson, not json.
        json_serializer=_json_text,
        json_deserializer=orjson.loads,
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": settings.db_command_timeout_seconds,
            "server_settings": {"application_name": settings.service_name},
        },
    )
    _count_connections(engine.sync_engine.pool, settings.db_pool_size)
    return engine


def _count_connections(pool: Pool, size: int) -> None:
    """Keep the pool gauges current in every worker as connections come and go, not only in the
    worker that answers a scrape."""
    metrics.DB_POOL_SIZE.set(size)
    event.listen(pool, "checkout", lambda *_: metrics.DB_POOL_CHECKED_OUT.inc())
    event.listen(pool, "checkin", lambda *_: metrics.DB_POOL_CHECKED_OUT.dec())


def _json_text(value: object) -> str:
    return orjson.dumps(value).decode()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
