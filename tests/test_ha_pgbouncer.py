"""The service behind PgBouncer in transaction mode (Debian's 1.18: no protocol-level prepared
statements), on a throwaway PgBouncer in front of the test's database.

With DB_PREPARED_STATEMENTS=false, two service processes take a short mixed load (bookings, holds,
cancellations, waitlist, payments, with the sweeper and the outbox relay running) through a pool of
four server connections: no 5xx, the invariant holds, every booking row is one answered 201 and
every outbox message is published. With the default, a statement prepared in one transaction is
missing from the server connection the next one runs on: the reason the setting exists.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.config import Settings
from app.core.security import Role, create_access_token
from app.db.session import create_engine
from tests.checks import assert_invariant, count
from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.ha.pgbouncer import Pgbouncer
from tests.mixed_load import EVENTS, Client, Tally
from tests.service_process import ServiceProcess
from tests.support import process_env

pytestmark = pytest.mark.ha

RUN_SECONDS = 20
CLIENTS = 12


async def test_mixed_load_through_transaction_pooling_without_prepared_statements(
    database_url: str, redis_url: str, db: AsyncConnection
) -> None:
    tally = Tally()
    with Pgbouncer(database_url, pool_size=4) as bouncer:
        settings = make_settings(bouncer.url, redis_url)
        env = {
            **process_env(settings),
            "DB_PREPARED_STATEMENTS": "false",
            "PAYMENT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "RESERVATION_TIMEOUT_MINUTES": "0.03",
            "SWEEP_INTERVAL_SECONDS": "0.5",
            "OUTBOX_POLL_SECONDS": "0.5",
        }
        services = [ServiceProcess(env) for _ in range(2)]
        try:
            for service in services:
                service.start()
            await create_events(services[0].url, settings)
            deadline = time.monotonic() + RUN_SECONDS
            await asyncio.gather(*(Client(1000 + i, services, settings, tally).run(deadline) for i in range(CLIENTS)))
            await wait_for_outbox(db)
        finally:
            errors = [line for s in services for line in s.log_tail(20000).splitlines() if "unhandled_error" in line]
            for service in services:
                service.stop()

    print(f"\nanswers through pgbouncer: {dict(tally.statuses)}; bookings answered 201: {len(tally.booked)}")
    failed = {status: n for status, n in tally.statuses.items() if isinstance(status, str) or status >= 500}
    assert not failed, f"{failed}: {tally.server_errors[:3]} {errors[:3]}"
    assert len(tally.booked) > 50
    await assert_invariant(db)
    rows: dict[int, str] = dict((await db.execute(text("SELECT id, booking_reference FROM bookings"))).all())
    assert rows == tally.booked, "booking rows and the 201s answered differ"


async def create_events(base_url: str, settings: Settings) -> None:
    admin = {"Authorization": f"Bearer {create_access_token(settings, 1, role=Role.ADMIN)}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        for event_id in EVENTS:
            body = {"event_name": f"Event {event_id}", "total_capacity": 30, "price": "12.50", "currency": "USD"}
            response = await http.put(f"/api/v1/admin/availability/{event_id}", json=body, headers=admin)
            assert response.status_code == 200


async def wait_for_outbox(db: AsyncConnection, within: float = 10.0) -> None:
    """The relay (its lock is transaction-scoped) publishes everything through the pooler too."""
    for _ in range(int(within / 0.2)):
        if not await count(db, "outbox", "published_at IS NULL"):
            return
        await asyncio.sleep(0.2)
    assert await count(db, "outbox", "published_at IS NULL") == 0


async def test_a_cached_statement_is_missing_on_another_server_connection(database_url: str, redis_url: str) -> None:
    """asyncpg and the dialect keep each prepared statement for the next transaction, which the
    pooler may run on another server connection; names are numbered per process, so another
    process (a second worker) would meet names already taken on the first one."""
    with Pgbouncer(database_url, pool_size=2) as bouncer:
        for prepared in (True, False):
            engine = create_engine(make_settings(bouncer.url, redis_url, db_prepared_statements=prepared))
            try:
                if prepared:
                    with pytest.raises(DBAPIError, match=r"prepared statement .* does not exist"):
                        await same_statement_on_two_servers(engine)
                else:
                    await same_statement_on_two_servers(engine)
            finally:
                await engine.dispose()


async def same_statement_on_two_servers(engine: AsyncEngine) -> None:
    async with engine.connect() as first:
        assert await first.scalar(text("SELECT 1")) == 1
        await first.commit()
        async with engine.connect() as second:
            await second.scalar(text("SELECT 2"))  # its transaction holds the server `first` used
            assert await first.scalar(text("SELECT 1")) == 1
            await first.commit()
            await second.commit()
