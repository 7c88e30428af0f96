"""A minute of mixed load through three real service processes, with faults along the way.

Run by `make test-long`. Redis is a throwaway server of the test's own (so it can be stopped);
the faults: one process killed with SIGKILL and restarted, Redis stopped and restarted, the
services' PostgreSQL connections cut. Short hold timeouts make holds and offers lapse while their
owners are booking them. Afterwards: the invariant for every event, every 201 matches a row, and
every lifecycle message is in the Stream exactly once.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.security import Role, create_access_token
from tests.checks import assert_invariant
from tests.conftest import WEBHOOK_SECRET, make_settings, running_app
from tests.mixed_load import EVENTS, Client, Tally
from tests.redis_server import ThrowawayRedis
from tests.service_process import ServiceProcess
from tests.support import process_env

pytestmark = pytest.mark.long

RUN_SECONDS = 60
CLIENTS = 24


async def faults(
    services: list[ServiceProcess], redis: ThrowawayRedis, db: AsyncConnection, start: float, seen_health: list[str]
) -> None:
    async def at(second: float) -> None:
        await asyncio.sleep(max(0.0, start + second - time.monotonic()))

    await at(12)
    services[1].kill()  # SIGKILL mid-load: nothing half-written, its holds swept by the others
    await at(16)
    await asyncio.to_thread(services[1].start)
    await at(25)
    redis.stop()
    await at(28)
    async with httpx.AsyncClient(timeout=10) as http:
        seen_health.append((await http.get(f"{services[0].url}/api/v1/health")).json()["status"])
    await at(33)
    redis.start()
    await at(42)
    await db.execute(
        text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'evently-bookings' AND datname = current_database() AND pid <> pg_backend_pid()"
        )
    )
    await db.commit()


async def test_three_instances_mixed_load_with_faults(database_url: str, db: AsyncConnection) -> None:
    redis = ThrowawayRedis()
    redis.start()
    settings = make_settings(database_url, redis.url)
    env = {
        **process_env(settings),
        "PAYMENT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BOOKING_TIMEOUT_MINUTES": "0.05",
        "RESERVATION_TIMEOUT_MINUTES": "0.03",
        "WAITLIST_NOTIFICATION_TIMEOUT_HOURS": "0.0008",
        "SWEEP_INTERVAL_SECONDS": "0.5",
        "OUTBOX_POLL_SECONDS": "0.5",
        "REDIS_SOCKET_TIMEOUT_SECONDS": "0.2",
        "REDIS_BREAKER_RESET_SECONDS": "1",
    }
    services = [ServiceProcess(env) for _ in range(3)]
    tally = Tally()
    try:
        for service in services:
            service.start()
        admin = {"Authorization": f"Bearer {create_access_token(settings, 1, role=Role.ADMIN)}"}
        async with httpx.AsyncClient(base_url=services[0].url, timeout=10) as http:
            for event_id in EVENTS:
                body = {"event_name": f"Event {event_id}", "total_capacity": 30, "price": "12.50", "currency": "USD"}
                assert (
                    await http.put(f"/api/v1/admin/availability/{event_id}", json=body, headers=admin)
                ).status_code == 200
        start = time.monotonic()
        clients = [Client(1000 + i, services, settings, tally) for i in range(CLIENTS)]
        during_outage: list[str] = []
        await asyncio.gather(
            faults(services, redis, db, start, during_outage), *(c.run(start + RUN_SECONDS) for c in clients)
        )
        await asyncio.sleep(6)  # every short hold has lapsed and been swept by now
        async with httpx.AsyncClient(timeout=10) as http:
            health = [(await http.get(f"{s.url}/api/v1/health")).json()["status"] for s in services]
        for service in services:
            service.terminate()
        async with running_app(settings) as api:  # flush what the relays had not sent yet
            await api.client._transport.app.state.relay.publish_pending()  # type: ignore[attr-defined]
        stream = Redis.from_url(redis.url)
        entries = await stream.xrange(settings.events_stream)
        await stream.aclose()
    finally:
        errors = [line for s in services for line in s.log_tail(20000).splitlines() if "unhandled_error" in line]
        for service in services:
            service.stop()
        redis.close()

    print(f"\nanswers: {dict(tally.statuses)}; bookings answered 201: {len(tally.booked)}")
    assert not tally.server_errors, "\n".join(errors[:3])
    assert during_outage == ["degraded"] and health == ["healthy"] * 3
    assert sum(n for s, n in tally.statuses.items() if s == 201) > 200
    await assert_invariant(db)
    await db.rollback()
    rows = dict((await db.execute(text("SELECT id, booking_reference FROM bookings"))).all())
    assert all(rows.get(booking_id) == reference for booking_id, reference in tally.booked.items())
    lapsed = (
        await db.execute(
            text(
                "SELECT (SELECT count(*) FROM reservations"
                " WHERE status = 'active' AND expires_at < now() - interval '3 s')"
                " + (SELECT count(*) FROM bookings WHERE status = 'pending' AND expires_at < now() - interval '3 s')"
            )
        )
    ).scalar_one()
    assert lapsed == 0
    message_ids = [fields[b"id"].decode() for _, fields in entries]
    outbox_ids = {str(row[0]) for row in (await db.execute(text("SELECT message_id FROM outbox"))).all()}
    unpublished = (await db.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar_one()
    assert unpublished == 0
    assert len(message_ids) == len(set(message_ids)), "a message reached the stream twice"
    assert set(message_ids) == outbox_ids
