"""Each checkout from the pool checks its connection in one round trip, and a connection the server
closed while it sat in the pool is replaced before anybody uses it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asyncpg import Connection
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.config import Settings
from app.db.session import create_engine


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        pid: int = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return pid


async def test_a_checkout_sends_one_statement(engine: AsyncEngine) -> None:
    await backend_pid(engine)  # the pool now holds a used connection
    sent: list[str] = []

    def log_queries(dbapi_connection: Any, *_: Any) -> None:
        driver: Connection = dbapi_connection.driver_connection
        driver.add_query_logger(lambda record: sent.append(record.query))

    # Registered after the ping's listener: it runs once the ping has passed, so the logger sees
    # the next checkout's statements from the start.
    event.listen(engine.sync_engine.pool, "checkout", log_queries, once=True)
    await backend_pid(engine)
    sent.clear()
    async with engine.connect() as connection:
        await asyncio.sleep(0)  # asyncpg calls its query loggers soon, not at once
        assert sent == ["SELECT 1"]  # not BEGIN, `;` and ROLLBACK, the dialect's own ping
        await connection.execute(text("SELECT 1 + 1"))


async def test_a_connection_closed_in_the_pool_is_replaced(engine: AsyncEngine, db: AsyncConnection) -> None:
    first = await backend_pid(engine)
    await db.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    await db.commit()
    second = await backend_pid(engine)  # no error: the checkout found it closed and connected again
    assert second != first
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT 41 + 1"))).scalar_one() == 42
