"""A burst bigger than the Redis pool is load, not an outage: the deny list and the rate limit hold,
and the circuit breaker stays closed (issue 12, defect 1)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings
from app.core.errors import UnauthorizedError
from app.core.security import Principal, Role, create_access_token
from app.db.redis import RedisGateway
from app.services.revocation import RevocationChecker
from bench.http import Connection, bearer
from tests.checks import assert_invariant, count
from tests.conftest import DenyList, make_settings, running_app
from tests.redis_server import ThrowawayRedis
from tests.service_process import ServiceProcess
from tests.support import process_env

T = TypeVar("T")
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
            *(connection.request(b"POST", b"/api/v1/bookings/", bearer(token), booking) for connection in connections)
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
    settings: Settings, db: AsyncConnection, deny_list: DenyList
) -> None:
    user_id = FIRST_USER
    await deny_list.revoke_user(user_id)
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


async def test_a_pool_wait_that_times_out_is_503_and_not_an_outage(
    database_url: str, redis_url: str, deny_list: DenyList
) -> None:
    settings = make_settings(
        database_url,
        redis_url,
        redis_max_connections=1,
        redis_pool_timeout_seconds=0.2,
        rate_limit_per_minute=5,
        auth_revocation_cache_seconds=60,
    )
    waiting, checked = FIRST_USER + 2, FIRST_USER + 3
    async with running_app(settings) as api:
        await api.create_event(1, capacity=10)
        assert (await api.client.get("/api/v1/bookings/", headers=api.headers(checked))).status_code == 200
        pool = api.runtime.redis.client.connection_pool
        taken = await pool.get_connection()  # the pool's only connection, busy for a while
        try:
            for user_id in (waiting, waiting, waiting, checked):  # deny-list check; then the rate limit
                response = await api.book(user_id, 1)
                assert response.status_code == 503 and response.json()["code"] == "service_busy", response.text
                assert response.headers["Retry-After"] == "1"
            assert api.runtime.redis.available  # four pool timeouts: the breaker (3 failures) stays closed
        finally:
            await pool.release(taken)
        await deny_list.revoke_user(waiting)
        # The busy answer was not remembered: the deny list is asked now.
        response = await api.client.get("/api/v1/bookings/", headers=api.headers(waiting))
        assert response.status_code == 401 and response.json()["code"] == "token_revoked"
        assert (await api.book(checked, 1)).status_code == 201


async def test_an_answer_given_without_redis_is_not_remembered(database_url: str) -> None:
    server = ThrowawayRedis()
    server.start()
    settings = make_settings(database_url, server.url, auth_revocation_cache_seconds=60)
    gateway = RedisGateway(settings)
    checker = RevocationChecker(settings, gateway)
    principal = Principal(user_id=7, role=Role.USER, jti=None)
    try:
        server.stop()
        await checker.check(principal)  # Redis down, AUTH_REDIS_FAILURE_MODE=allow: let through
        server.start()
        await gateway.client.set("revoked:user:7", "1")
        with pytest.raises(UnauthorizedError):
            await checker.check(principal)
    finally:
        await gateway.close()
        server.close()


class CountingGateway(RedisGateway):
    """The real gateway, counting the calls made through it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls: Counter[str] = Counter()

    async def call(self, name: str, operation: Callable[[Redis], Awaitable[T]]) -> T:
        self.calls[name] += 1
        return await super().call(name, operation)


async def test_simultaneous_checks_of_a_token_share_one_lookup(settings: Settings, deny_list: DenyList) -> None:
    gateway = CountingGateway(settings)
    checker = RevocationChecker(settings, gateway)
    valid = Principal(user_id=FIRST_USER + 4, role=Role.USER, jti=None)
    revoked = Principal(user_id=FIRST_USER + 5, role=Role.USER, jti=None)
    await deny_list.revoke_user(revoked.user_id)
    try:
        checks = [asyncio.create_task(checker.check(valid)) for _ in range(100)]
        checks[0].cancel()  # a caller that goes away does not take the lookup with it
        outcomes = await asyncio.gather(*checks, return_exceptions=True)
        assert isinstance(outcomes[0], asyncio.CancelledError) and outcomes[1:] == [None] * 99
        assert gateway.calls["auth_deny_list"] == 1
        refused = await asyncio.gather(*(checker.check(revoked) for _ in range(100)), return_exceptions=True)
        assert all(isinstance(outcome, UnauthorizedError) for outcome in refused)
        assert gateway.calls["auth_deny_list"] == 2  # one lookup per token
    finally:
        await gateway.close()


async def test_checks_of_many_new_tokens_share_round_trips(settings: Settings, deny_list: DenyList) -> None:
    """A rush of users never seen before: their deny-list lookups go to Redis together, each still
    answered on its own (a revoked user among them is refused, by user or by token id)."""
    gateway = CountingGateway(settings)
    checker = RevocationChecker(settings, gateway)
    users = [Principal(user_id=FIRST_USER + 100 + n, role=Role.USER, jti=f"jti-{n}") for n in range(200)]
    await deny_list.revoke_user(users[7].user_id)
    await deny_list.revoke_token(users[8].jti)
    try:
        outcomes = await asyncio.gather(*(checker.check(user) for user in users), return_exceptions=True)
        refused = [n for n, outcome in enumerate(outcomes) if isinstance(outcome, UnauthorizedError)]
        assert refused == [7, 8] and outcomes.count(None) == 198
        assert gateway.calls["auth_deny_list"] <= 2  # one round trip, or two if the first left early
    finally:
        await deny_list.forgive_token(users[8].jti)
        await gateway.close()
