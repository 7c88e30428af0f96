"""The booking path is rehearsed at start-up (app/services/warm_up.py), and leaves nothing behind."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core import metrics
from app.core.config import Settings
from tests.conftest import make_settings, running_app
from tests.redis_server import free_port

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
        await api.create_event(42, capacity=5)
        booked = await api.book(7, 42)
        assert booked.status_code == 201, booked.text
        assert booked.json()["id"] == 1  # a fresh service's first booking
    # The event and the booking, each with its audit row and message: nothing of the warm-up's.
    assert (await db.execute(ROWS)).one() == (1, 1, 2, 2)
    assert _batches_counted() == batches + 1  # the request's batch alone


async def test_the_service_starts_when_the_database_does_not_answer(
    redis_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    unreachable = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    async with running_app(make_settings(unreachable, redis_url, warm_up_connections=2)) as api:
        assert (await api.client.get("/health")).status_code == 200  # alive, and saying what is down
        assert (await api.client.get("/api/v1/health")).status_code == 503
    assert '"event":"warm_up_failed"' in capfd.readouterr().out
