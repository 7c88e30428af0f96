"""Helpers shared by test modules (no test module imports another)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.application import create_app
from app.core.config import Settings
from app.services.audit import Actor
from app.services.booking_batcher import BookingRequest
from app.services.payments import sign
from tests.conftest import WEBHOOK_SECRET, Api
from tests.redis_server import free_port
from tests.service_process import service_env

ROOT = Path(__file__).resolve().parent.parent
# The least environment the settings load with (no service needs to answer at these addresses).
BASE_ENV = {"DATABASE_URL": "postgresql://u@db:5432/bookings", "REDIS_URL": "redis://cache:6379/0"}

T = TypeVar("T")
UNPAIRED_SURROGATE = "\ud800"  # text PostgreSQL cannot store

# The service's transactions waiting for the row the writer's current transaction holds.
BLOCKED_SERVICE_WRITE = text(
    "SELECT xact_start FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name = :name "
    "AND wait_event_type = 'Lock' AND CAST(:holder AS integer) = ANY(pg_blocking_pids(pid))"
)


def process_env(settings: Settings) -> dict[str, str]:
    """The environment of a service process using the test run's database, Redis and keys."""
    return service_env(
        {
            "DATABASE_URL": settings.sqlalchemy_database_url,
            "REDIS_URL": settings.redis_connection_url,
            "REDIS_KEY_PREFIX": settings.redis_key_prefix,
            "EVENTS_CHANNEL_PREFIX": settings.events_channel_prefix,
            "EVENTS_STREAM": settings.events_stream,
            "INBOUND_CHANNEL_PREFIX": settings.inbound_channel_prefix,
            "JWT_SECRET": settings.jwt_secret.get_secret_value(),
            "SHUTDOWN_TIMEOUT_SECONDS": "10",
        }
    )


class ConcurrentWriter:
    """Another writer of an event's row, outside the service: each bump of the row's version is a
    transaction that holds the row until it commits. A service transaction that read the row
    before the commit finds its version moved on when its own UPDATE gets the row."""

    def __init__(self, engine: AsyncEngine, settings: Settings, event_id: int) -> None:
        self._engine = engine
        self._service_name = settings.service_name
        self._event_id = event_id

    async def _bump(self) -> tuple[AsyncConnection, int]:
        connection = await self._engine.connect()
        pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await connection.execute(
            text("UPDATE event_availability SET version = version + 1 WHERE event_id = :id"), {"id": self._event_id}
        )
        return connection, int(pid)  # its transaction is open: the row stays locked until commit

    async def _service_blocked(
        self, watch: AsyncConnection, holder: int, seen: set[datetime], request: asyncio.Task[Any]
    ) -> int | None:
        """Wait until a service transaction waits for the `holder`'s row lock: how many such
        transactions are new (a statement can be blocked again by the next holder when PostgreSQL
        lets that one take the row's new version first). None once `request` is answered."""
        while not request.done():
            await watch.rollback()
            params = {"name": self._service_name, "holder": holder}
            blocked = set((await watch.execute(BLOCKED_SERVICE_WRITE, params)).scalars())
            if blocked:
                new = blocked - seen
                seen.update(blocked)
                return len(new)
            await asyncio.sleep(0.01)
        return None

    async def make_stale(self, send: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """Send a request and let each of its attempts read the row, then move the row's version on
        under it, until the request is answered: the answer and how many attempts were made stale."""
        seen: set[datetime] = set()
        stale = 0
        async with self._engine.connect() as watch:
            holder, pid = await self._bump()  # before the request: its first attempt cannot slip through
            request = asyncio.ensure_future(send())
            try:
                while (new := await self._service_blocked(watch, pid, seen, request)) is not None:
                    await holder.commit()
                    await holder.close()
                    stale += new
                    holder, pid = await self._bump()
            finally:
                await holder.rollback()
                await holder.close()
        return await request, stale


@asynccontextmanager
async def concurrent_writer(database_url: str, settings: Settings, event_id: int) -> AsyncIterator[ConcurrentWriter]:
    engine = create_async_engine(database_url)
    try:
        yield ConcurrentWriter(engine, settings, event_id)
    finally:
        await engine.dispose()


def closed_port() -> int:
    """A port nothing listens on."""
    return free_port()


async def pay(api: Api, user: int, booking_id: int) -> dict[str, Any]:
    response = await api.client.post(
        f"/api/v1/bookings/{booking_id}/payment", json={"payment_method": "card"}, headers=api.headers(user)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def webhook(
    api: Api,
    intent: dict[str, Any],
    outcome: str = "succeeded",
    *,
    amount: str | None = None,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
    currency: str | None = None,
) -> httpx.Response:
    body = json.dumps(
        {
            "payment_reference": intent["payment_reference"],
            "outcome": outcome,
            "amount": amount or intent["amount"],
            "currency": currency or intent["currency"],
        }
    ).encode()
    headers = {"Evently-Signature": sign(body, secret, timestamp), "content-type": "application/json"}
    return await api.client.post("/api/v1/payments/webhook", content=body, headers=headers)


async def figures(api: Api, event_id: int = 1) -> tuple[int, int, int]:
    data = await api.availability(event_id)
    return data["available_capacity"], data["reserved_capacity"], data["confirmed_capacity"]


async def messages_about(db: AsyncConnection, booking_id: int) -> list[dict[str, Any]]:
    await db.rollback()
    rows = await db.execute(
        text("SELECT payload FROM outbox WHERE (payload->>'booking_id')::bigint = :id ORDER BY id"), {"id": booking_id}
    )
    return [dict(payload) for payload in rows.scalars()]


@asynccontextmanager
async def served_api(settings: Settings) -> AsyncIterator[Api]:
    """The app behind a real uvicorn server on a free port (httpx's ASGI transport does not stream),
    with event 1 of 5 seats."""
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None, lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.config.port}", timeout=10) as client:
            api = Api(client, settings, app.state.runtime)
            await api.create_event(1, capacity=5)
            yield api
    finally:
        server.should_exit = True
        await serving


def request_for(user_id: int, event_id: int, quantity: int = 1, notes: str | None = None) -> BookingRequest:
    """A booking request as the batcher takes it, past the edge's validation."""
    return BookingRequest(Actor("user", user_id), user_id, event_id, quantity, notes=notes)


@asynccontextmanager
async def lock_held_elsewhere(api: Api, event_id: int) -> AsyncIterator[None]:
    """The event's Redis lock held by another instance for the body."""
    key = api.runtime.redis.key("lock", "event", event_id)
    assert await api.runtime.redis.client.set(key, "another-instance", nx=True, px=10_000)
    try:
        yield
    finally:
        await api.runtime.redis.client.delete(key)


async def until(condition: Callable[[], bool]) -> None:
    """Poll the batcher's state (it has no event to wait on), for at most ten seconds."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
