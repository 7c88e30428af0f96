"""A burst bigger than the Redis pool is load, not an outage: the deny list and the rate limit hold,
and the circuit breaker stays closed (issue 12, defect 1)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings
from app.core.revocation import RevocationChecker
from app.core.security import Principal, Role, create_access_token
from app.db.redis import RedisGateway
from bench.http import Connection
from tests.checks import assert_invariant, count
from tests.conftest import make_settings, running_app
from tests.service_process import ServiceProcess
from tests.test_processes import process_env

BURST = 300
# The deny list is shared with the auth service (no key prefix): users nobody else's test uses.
FIRST_USER = 10**12 + secrets.randbelow(10**11)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


def burst_env(settings: Settings, **extra: str) -> dict[str, str]:
    # A pool far smaller than the burst, and socket reads patient enough that a machine busy with
    # other work does not make a slow answer look like a Redis failure.
    return {
        **process_env(settings),
        "REDIS_MAX_CONNECTIONS": "10",
        "REDIS_POOL_TIMEOUT_SECONDS": "10",
        "REDIS_SOCKET_TIMEOUT_SECONDS": "5",
        **extra,
    }


@pytest.fixture
async def deny_list(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url)
    try:
        yield redis
    finally:
        keys = [key async for key in redis.scan_iter(match=f"revoked:user:{str(FIRST_USER)[:6]}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def burst(service: ServiceProcess, settings: Settings, user_id: int) -> list[Answer]:
    """BURST bookings at once with one user's token, each on a connection opened beforehand.

    The load generator's lean client: each request is written whole as its task starts, so all of
    them reach the service within a moment (httpx spends long enough per request that the service
    would answer each before the next arrived).
    """
    admin = {"Authorization": f"Bearer {create_access_token(settings, 1, role=Role.ADMIN)}"}
    body = {"event_name": "Gig", "total_capacity": 1000, "price": "5.00", "currency": "USD"}
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        assert (await client.put("/api/v1/admin/availability/1", json=body, headers=admin)).status_code == 200
    token = create_access_token(settings, user_id)
    booking = json.dumps({"event_id": 1, "quantity": 1}).encode()
    connections = await asyncio.gather(*(Connection.open(service.url) for _ in range(BURST)))
    try:
        answers = await asyncio.gather(
            *(connection.request("POST", "/api/v1/bookings/", token, booking) for connection in connections)
        )
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
    return [Answer(status, json.loads(content)) for status, content in answers]


async def assert_breaker_closed(service: ServiceProcess) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        exposition = (await client.get("/metrics")).text
    assert "redis_circuit_open 0.0" in exposition
    assert "redis_failures_total{" not in exposition  # nothing counted as Redis being down


def assert_busy_answers_are_service_busy(answers: list[Answer]) -> None:
    # Their Retry-After is checked in test_a_pool_wait_that_times_out_is_503_and_not_an_outage.
    assert all(answer.body["code"] == "service_busy" for answer in answers if answer.status == 503)


async def test_a_burst_of_a_revoked_user_books_nothing(
    settings: Settings, db: AsyncConnection, deny_list: Redis
) -> None:
    user_id = FIRST_USER
    await deny_list.set(f"revoked:user:{user_id}", "1", ex=300)
    service = ServiceProcess(burst_env(settings))
    service.start()
    try:
        answers = await burst(service, settings, user_id)
        statuses = Counter(answer.status for answer in answers)
        assert set(statuses) <= {401, 503}, statuses
        assert all(answer.body["code"] == "token_revoked" for answer in answers if answer.status == 401)
        assert_busy_answers_are_service_busy(answers)
        assert await count(db, "bookings") == 0
        await assert_breaker_closed(service)
    finally:
        service.stop()


async def test_a_burst_is_held_to_the_rate_limit(settings: Settings, db: AsyncConnection) -> None:
    service = ServiceProcess(burst_env(settings, RATE_LIMIT_PER_MINUTE="5"))
    service.start()
    try:
        answers = await burst(service, settings, FIRST_USER + 1)
        statuses = Counter(answer.status for answer in answers)
        assert set(statuses) <= {201, 429, 503}, statuses
        assert statuses[201] == 5, statuses
        assert all(answer.body["code"] == "rate_limited" for answer in answers if answer.status == 429)
        assert_busy_answers_are_service_busy(answers)
        assert await count(db, "bookings") == 5
        await assert_invariant(db)
        await assert_breaker_closed(service)
    finally:
        service.stop()
