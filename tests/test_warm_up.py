"""The booking path is rehearsed at start-up (app/services/warm_up.py), and leaves nothing behind."""

from __future__ import annotations

import socket

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core import metrics
from app.core.config import Settings
from tests.conftest import make_settings, running_app
from tests.redis_server import free_port
from tests.service_process import ServiceProcess
from tests.support import process_env

ROWS = text(
    "SELECT (SELECT count(*) FROM event_availability), (SELECT count(*) FROM bookings),"
    " (SELECT count(*) FROM audit_log), (SELECT count(*) FROM outbox)"
)
PREPARED = text("SELECT statement FROM pg_prepared_statements")


@pytest.fixture
def warm(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url, warm_up_connections=2)


def _batches_counted() -> float:
    return next(s.value for s in metrics.BOOKING_BATCH_SIZE.collect()[0].samples if s.name.endswith("_count"))


async def test_the_pool_starts_with_the_booking_statements_prepared(warm: Settings) -> None:
    async with running_app(warm) as api:
        engine = api.runtime.engine
        assert engine.pool.checkedin() == 2  # type: ignore[attr-defined]
        async with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                statements = " ".join((await connection.execute(PREPARED)).scalars())
                assert "UPDATE event_availability SET available_capacity" in statements  # the seats taken
                assert "INSERT INTO bookings" in statements  # with the bookings, in the same statement
                assert "FOR NO KEY UPDATE" in statements  # a batch of several events reads them locked


async def test_the_warm_up_leaves_no_rows_draws_no_id_and_counts_no_batch(warm: Settings, db: AsyncConnection) -> None:
    batches = _batches_counted()
    async with running_app(warm) as api:
        assert api.runtime.engine.pool.checkedin() == 2  # type: ignore[attr-defined]  # it did run
        assert (await api.create_event(42, capacity=5))["id"] == 1  # a fresh service's first event
        booked = await api.book(7, 42)
        assert booked.status_code == 201, booked.text
        assert booked.json()["id"] == 1  # a fresh service's first booking
    # The event and the booking, each with its audit row and message: no row of the warm-up's.
    assert (await db.execute(ROWS)).one() == (1, 1, 2, 2)
    assert _batches_counted() == batches + 1  # the request's batch alone


def _start_on(database_url: str, redis_url: str) -> str:
    """Start a service process on `database_url`; its log once it answers."""
    service = ServiceProcess(process_env(make_settings(database_url, redis_url)))
    try:
        service.start()
        assert httpx.get(f"{service.url}/health").status_code == 200
        return service.log.read_text()
    finally:
        service.stop()


def test_the_service_starts_when_the_database_refuses(redis_url: str) -> None:
    log = _start_on(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing", redis_url)
    assert '"event":"warm_up_failed"' in log


def test_the_service_starts_when_the_database_does_not_answer(redis_url: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts, never answers
        log = _start_on(f"postgresql+asyncpg://postgres@127.0.0.1:{silent.getsockname()[1]}/nothing", redis_url)
    assert '"event":"warm_up_failed"' in log and '"error_type":"TimeoutError"' in log
