"""Test session: a fresh database migrated with Alembic, real Redis, the app over ASGI."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from app.application import create_app
from app.core.clock import clock
from app.core.config import Settings
from app.core.security import Role, create_access_token
from app.runtime import Runtime
from migrate import alembic_config
from tests import servers
from tests.ha.redis_topology import ClusterTopology, SentinelTopology

RUN_ID = uuid.uuid4().hex[:8]
TEST_JWT_SECRET = "test-secret-" + "x" * 40
WEBHOOK_SECRET = "whsec_test_" + "y" * 24
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def service_urls() -> Iterator[tuple[str, str]]:
    """PostgreSQL and Redis URLs: the configured ones, or embedded servers when nothing answers."""
    pg_url = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    started = servers.embedded(ROOT / ".data" / f"test-{RUN_ID}")
    try:
        if not servers.tcp_answers(pg_url, 5432):
            pg_url = started.start_postgres()
        if not servers.tcp_answers(redis_url, 6379):
            redis_url = started.start_redis()
        yield pg_url, redis_url
    finally:
        started.stop()


@pytest.fixture(scope="session")
def database_url(service_urls: tuple[str, str]) -> Iterator[str]:
    admin_url = service_urls[0]
    name = f"bookings_test_{RUN_ID}"
    servers.create_database(admin_url, name)
    url = servers.with_database(admin_url, name)
    from alembic import command

    command.upgrade(alembic_config(url), "head")
    try:
        yield url
    finally:
        servers.drop_database(admin_url, name)


@pytest.fixture(scope="session")
def redis_url(service_urls: tuple[str, str]) -> str:
    return service_urls[1]


def make_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_key_prefix": f"test:{RUN_ID}:",
        "events_channel_prefix": f"test:{RUN_ID}:evently:bookings",
        "events_stream": f"test:{RUN_ID}:evently:bookings:stream",
        "inbound_channel_prefix": f"test:{RUN_ID}:evently:events",
        "jwt_secret": TEST_JWT_SECRET,
        "payment_webhook_secret": WEBHOOK_SECRET,
        "background_tasks_enabled": False,
        "log_level": "WARNING",
        "redis_breaker_reset_seconds": 2.0,
        "warm_up_connections": 0,  # a new app for every test: tests/test_warm_up.py warms up
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url)


TABLES = "bookings, reservations, waitlist_entries, audit_log, outbox, idempotency_keys, event_availability"


async def _forget_run_keys(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    keys = [key async for key in redis.scan_iter(match=f"test:{RUN_ID}:*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture(autouse=True)
async def clean_state(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every test starts with empty tables, no Redis keys of this run, and the real clock."""
    clock.reset()
    uses_services = "database_url" in request.fixturenames
    if uses_services:
        engine = create_async_engine(request.getfixturevalue("database_url"))
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
        await engine.dispose()
        await _forget_run_keys(request.getfixturevalue("redis_url"))
    yield
    clock.reset()
    if uses_services:
        await _forget_run_keys(request.getfixturevalue("redis_url"))


class Api:
    """An httpx client on the app with helpers to act as a given user."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings, runtime: Runtime) -> None:
        self.client = client
        self.settings = settings
        self.runtime = runtime

    def headers(self, user_id: int, role: Role = Role.USER, **extra: str) -> dict[str, str]:
        token = create_access_token(self.settings, user_id, role=role)
        return {"Authorization": f"Bearer {token}", **extra}

    def admin(self) -> dict[str, str]:
        return self.headers(1, Role.ADMIN)

    async def create_event(self, event_id: int, capacity: int, price: str = "10.00", **extra: Any) -> dict[str, Any]:
        body = {
            "event_name": f"Event {event_id}",
            "total_capacity": capacity,
            "price": price,
            "currency": "USD",
            **extra,
        }
        response = await self.client.put(f"/api/v1/admin/availability/{event_id}", json=body, headers=self.admin())
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def book(self, user_id: int, event_id: int, quantity: int = 1, **extra: Any) -> httpx.Response:
        body = {"event_id": event_id, "quantity": quantity, **extra}
        return await self.client.post("/api/v1/bookings/", json=body, headers=self.headers(user_id))

    async def availability(self, event_id: int) -> dict[str, Any]:
        response = await self.client.get(f"/api/v1/availability/{event_id}", headers=self.headers(999))
        assert response.status_code == 200, response.text
        return dict(response.json())


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Api]:
    """The app with its lifespan running, driven over ASGI by an httpx client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, settings, app.state.runtime)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_app(settings) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncConnection]:
    """A plain connection for checking rows the way an operator would."""
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        yield connection
    await engine.dispose()


class DenyList:
    """The auth service's deny list (`revoked:user:<id>`, `revoked:jti:<jti>`) in the test's Redis;
    whatever it revoked is forgotten after the test."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._keys: set[str] = set()

    async def revoke_user(self, user_id: int) -> None:
        await self._revoke(f"revoked:user:{user_id}")

    async def revoke_token(self, jti: str) -> None:
        await self._revoke(f"revoked:jti:{jti}")

    async def forgive_token(self, jti: str) -> None:
        await self.redis.delete(f"revoked:jti:{jti}")

    async def _revoke(self, key: str) -> None:
        self._keys.add(key)
        await self.redis.set(key, "1", ex=300)

    async def forget(self) -> None:
        if self._keys:
            await self.redis.delete(*self._keys)


@pytest.fixture
async def deny_list(redis_url: str) -> AsyncIterator[DenyList]:
    redis = Redis.from_url(redis_url)
    revoked = DenyList(redis)
    try:
        yield revoked
    finally:
        await revoked.forget()
        await redis.aclose()


# Throwaway Redis topologies of the `make test-ha` runs (each test module gets its own).
@pytest.fixture(scope="module")
def sentinel() -> Iterator[SentinelTopology]:
    topology = SentinelTopology()
    try:
        topology.start()
        yield topology
    finally:
        topology.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterTopology]:
    topology = ClusterTopology()
    try:
        topology.start()
        yield topology
    finally:
        topology.close()
