"""A checkout from the pool checks its connection in one round trip, unless the connection was just
opened or was given back less than DB_CHECK_IDLE_SECONDS ago; connections the server closed while
they sat in the pool are replaced before anybody uses them, or, within that time and unseen by the
driver (a network cut), after the first statement that finds one closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asyncpg import Connection
from sqlalchemy import event, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core import metrics
from app.core.config import Settings
from app.db.session import RETURNED_AT, create_engine
from tests.tcp_proxy import SilentCutProxy

# Long enough that no step of a test on a loaded machine outlasts it; a longer idle time is made by
# backdating a connection's return, not by waiting.
CHECK_IDLE_SECONDS = 60.0


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine whose checkouts check every connection."""
    engine = create_engine(settings.model_copy(update={"db_check_idle_seconds": 0}))
    yield engine
    await engine.dispose()


@pytest.fixture
async def windowed_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine whose checkouts check only connections idle at least CHECK_IDLE_SECONDS."""
    engine = create_engine(settings.model_copy(update={"db_check_idle_seconds": CHECK_IDLE_SECONDS}))
    yield engine
    await engine.dispose()


async def backend_pid(connection: AsyncConnection) -> int:
    pid: int = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return pid


async def pids_of_two_at_once(engine: AsyncEngine) -> set[int]:
    async with engine.connect() as first, engine.connect() as second:
        return {await backend_pid(first), await backend_pid(second)}


def log_statements(engine: AsyncEngine, on: str) -> list[str]:
    """The statements the engine's next connection sends, from its `on` event ("connect": from its
    first checkout; "checkout": from its checkout after the next one, this listener running after
    the check)."""
    sent: list[str] = []

    def add_logger(dbapi_connection: Any, *_: Any) -> None:
        driver: Connection = dbapi_connection.driver_connection
        driver.add_query_logger(lambda record: sent.append(record.query))

    event.listen(engine.sync_engine.pool, on, add_logger, once=True)
    return sent


async def test_a_checkout_sends_one_statement(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:  # the pool now holds a used connection
        await backend_pid(connection)
    sent = log_statements(engine, "checkout")
    async with engine.connect() as connection:
        await backend_pid(connection)
    await asyncio.sleep(0)  # asyncpg calls its query loggers soon, not at once
    sent.clear()
    async with engine.connect() as connection:
        await asyncio.sleep(0)
        assert sent == ["SELECT 1"]  # not BEGIN, `;` and ROLLBACK, the dialect's own ping
        await connection.execute(text("SELECT 1 + 1"))


async def test_a_connection_just_opened_is_not_checked(engine: AsyncEngine) -> None:
    sent = log_statements(engine, "connect")
    async with engine.connect() as connection:
        await asyncio.sleep(0)
        assert sent == []
        await backend_pid(connection)


def backdate_next_return(engine: AsyncEngine, seconds: float) -> None:
    """The next connection given back counts as returned `seconds` ago (this listener runs after the
    engine's own, which records the return)."""

    def backdate(_dbapi_connection: Any, record: Any) -> None:
        record.info[RETURNED_AT] = time.monotonic() - seconds

    event.listen(engine.sync_engine.pool, "checkin", backdate, once=True)


async def statements_of_checkout_after(engine: AsyncEngine, idle: float) -> list[str]:
    """What a checkout of the engine's one pooled connection sends before it is used, when that
    connection was given back `idle` seconds before."""
    async with engine.connect() as connection:
        await backend_pid(connection)
    sent = log_statements(engine, "checkout")
    async with engine.connect() as connection:  # the listener is in place after this checkout
        await backend_pid(connection)
        backdate_next_return(engine, idle)
    sent.clear()
    async with engine.connect() as connection:
        await asyncio.sleep(0)
        before_use = list(sent)
        await backend_pid(connection)
    return before_use


async def test_a_connection_given_back_just_now_is_not_checked(windowed_engine: AsyncEngine) -> None:
    assert await statements_of_checkout_after(windowed_engine, 0) == []


async def test_a_connection_idle_longer_is_checked(windowed_engine: AsyncEngine) -> None:
    assert await statements_of_checkout_after(windowed_engine, CHECK_IDLE_SECONDS + 1) == ["SELECT 1"]


async def drivers_of_two_at_once(engine: AsyncEngine) -> dict[int, Connection]:
    """Two of the engine's pooled connections, by backend pid: asyncpg's own, to see what it knows."""
    async with engine.connect() as first, engine.connect() as second:
        return {
            await backend_pid(connection): (await connection.get_raw_connection()).driver_connection
            for connection in (first, second)
        }


async def terminate(db: AsyncConnection, pids: set[int]) -> None:
    cut = await db.execute(
        text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) AS pid"), {"pids": list(pids)}
    )
    assert all(cut.scalars())
    await db.commit()


async def test_a_connection_the_driver_saw_closed_is_replaced_within_the_window(
    windowed_engine: AsyncEngine, db: AsyncConnection
) -> None:
    """A server that ends its connections (a restart, a failover) closes their sockets; the driver
    sees it while they sit in the pool, and a checkout then replaces them without a round trip."""
    drivers = await drivers_of_two_at_once(windowed_engine)
    seen_closed = [asyncio.Event() for _ in drivers]
    for driver, seen in zip(drivers.values(), seen_closed, strict=True):
        driver.add_termination_listener(lambda _connection, seen=seen: seen.set())
    await terminate(db, set(drivers))
    async with asyncio.timeout(10):
        for seen in seen_closed:
            await seen.wait()
    assert all(driver.is_closed() for driver in drivers.values())
    after = await pids_of_two_at_once(windowed_engine)  # no error
    assert len(after) == 2 and not after & set(drivers)


async def test_a_connection_cut_unseen_within_the_window_fails_once_then_the_pool_is_new(
    settings: Settings,
) -> None:
    """The trade-off of not checking: after a network cut the driver does not know its connection is
    gone, so the first statement on it fails as a lost connection (the API answers 503), and the
    pool's other connections go with it."""
    server = make_url(settings.sqlalchemy_database_url)
    async with SilentCutProxy(server.host or "127.0.0.1", server.port or 5432) as proxy:
        through_proxy = server.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        engine = create_engine(
            settings.model_copy(update={"database_url": through_proxy, "db_check_idle_seconds": CHECK_IDLE_SECONDS})
        )
        try:
            before = await pids_of_two_at_once(engine)
            await proxy.cut()
            with pytest.raises(DBAPIError) as lost:
                async with engine.connect() as connection:
                    await backend_pid(connection)
            assert lost.value.connection_invalidated
            after = await pids_of_two_at_once(engine)
            assert len(after) == 2 and not after & before
        finally:
            await engine.dispose()


def connections_in_use() -> float:
    return metrics.DB_POOL_CHECKED_OUT._value.get()  # the gauge of this process


async def test_connections_closed_in_the_pool_are_replaced(engine: AsyncEngine, db: AsyncConnection) -> None:
    in_use = connections_in_use()
    before = await pids_of_two_at_once(engine)
    await terminate(db, before)
    # No error: the first checkout finds its connection closed and discards the older ones with it.
    after = await pids_of_two_at_once(engine)
    assert len(after) == 2 and not after & before
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT 41 + 1"))).scalar_one() == 42
    assert connections_in_use() == in_use  # a checkout that replaced its connection counted once
