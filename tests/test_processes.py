"""Real service processes: graceful shutdown under load, and the pool recovering from cut connections."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings
from app.core.security import Role, create_access_token
from tests.checks import assert_invariant, count
from tests.conftest import make_settings, running_app
from tests.service_process import ServiceProcess
from tests.support import process_env

# What a client may see of a shutdown instead of an answer: the connection refused once the service
# stopped listening, or closed (an idle keep-alive one, or one never accepted) before any request
# was read. Never a timeout, never a half answer.
NOT_RECEIVED = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)


async def test_sigterm_finishes_requests_in_flight(settings: Settings, db: AsyncConnection) -> None:
    service = ServiceProcess(process_env(settings))
    service.start()
    try:
        admin = create_access_token(settings, 1, role=Role.ADMIN)
        async with httpx.AsyncClient(base_url=service.url, timeout=20) as client:
            body = {"event_name": "Gig", "total_capacity": 1000, "price": "5.00", "currency": "USD"}
            created = await client.put(
                "/api/v1/admin/availability/1", json=body, headers={"Authorization": f"Bearer {admin}"}
            )
            assert created.status_code == 200

            async def book(user: int) -> int | str:
                token = create_access_token(settings, user)
                try:
                    response = await client.post(
                        "/api/v1/bookings/",
                        json={"event_id": 1, "quantity": 1},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except NOT_RECEIVED as exc:
                    return type(exc).__name__
                return response.status_code

            in_flight = [asyncio.create_task(book(100 + i)) for i in range(60)]
            await asyncio.sleep(0.05)
            started = time.monotonic()
            exit_code = await asyncio.to_thread(service.terminate)
            answers = await asyncio.gather(*in_flight)
        # uvicorn re-raises SIGTERM once it has shut down cleanly, so -15 is a clean exit too.
        assert exit_code in (0, -signal.SIGTERM) and time.monotonic() - started < 15
        assert all(a == 201 or isinstance(a, str) for a in answers), answers
        assert answers.count(201) > 0
        # A request that got no answer was never taken in (refused, or its connection closed before
        # the service read it): user by user, a booking exists exactly for the requests answered 201.
        await db.rollback()
        booked = set((await db.execute(text("SELECT user_id FROM bookings"))).scalars())
        assert booked == {100 + i for i, answer in enumerate(answers) if answer == 201}
        await assert_invariant(db)
    finally:
        service.stop()


async def test_cut_database_connections_recover(settings: Settings, db: AsyncConnection) -> None:
    async with running_app(make_settings(settings.sqlalchemy_database_url, settings.redis_connection_url)) as api:
        await api.create_event(1, capacity=500)
        first = await asyncio.gather(*(api.book(100 + i, 1) for i in range(20)))
        assert {r.status_code for r in first} == {201}
        await db.rollback()
        cut = await db.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database() AND pid <> pg_backend_pid()"
            ),
            {"name": settings.service_name},
        )
        assert len(cut.all()) > 0
        await db.commit()
        during = await asyncio.gather(*(api.book(200 + i, 1) for i in range(20)))
        for response in during:
            assert response.status_code in (201, 503), response.text
            if response.status_code == 503:
                assert response.json()["code"] == "database_unavailable"
        after = await asyncio.gather(*(api.book(300 + i, 1) for i in range(20)))
        assert {r.status_code for r in after} == {201}
        booked = sum(r.status_code == 201 for r in [*first, *during, *after])
    assert await count(db, "bookings") == booked
    await assert_invariant(db)


def metric_dirs() -> set[Path]:
    return set(Path("/dev/shm").glob("bookings-metrics-*"))


async def test_two_workers_answer_metrics_for_both(settings: Settings) -> None:
    metric_dirs_before = metric_dirs()
    service = ServiceProcess({**process_env(settings), "WORKERS": "2"})
    service.start()
    try:
        admin = {"Authorization": f"Bearer {create_access_token(settings, 1, role=Role.ADMIN)}"}
        # A connection per request: the kernel hands each new connection to either worker.
        async with httpx.AsyncClient(
            base_url=service.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
        ) as client:
            body = {"event_name": "Gig", "total_capacity": 100, "price": "5.00", "currency": "USD"}
            assert (await client.put("/api/v1/admin/availability/1", json=body, headers=admin)).status_code == 200
            for user in range(100, 130):
                token = create_access_token(settings, user)
                booked = await client.post(
                    "/api/v1/bookings/",
                    json={"event_id": 1, "quantity": 1},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert booked.status_code == 201
            scrapes = [(await client.get("/metrics")).text for _ in range(6)]
        for scrape in scrapes:  # whichever worker answers, it counts both
            assert 'bookings_total{outcome="created"} 30.0' in scrape
            assert f"db_pool_size {2 * settings.db_pool_size}.0" in scrape
        assert service.terminate() == 0
        assert metric_dirs() == metric_dirs_before  # removed on exit
    finally:
        service.stop()
