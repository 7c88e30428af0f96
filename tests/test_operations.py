"""Errors, health, request ids, metrics and migrations: what operators and clients rely on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.application import create_app
from app.core.config import Settings
from migrate import alembic_config
from tests import servers
from tests.conftest import Api, make_settings, running_app
from tests.support import closed_port


def _is_problem(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail", "code"} <= body.keys()
    assert body["status"] == status and body["code"] == code


async def test_problem_details_for_each_status(api: Api) -> None:
    await api.create_event(1, capacity=1)
    _is_problem(await api.client.get("/api/v1/bookings/"), 401, "not_authenticated")
    _is_problem(await api.client.get("/api/v1/admin/audit/", headers=api.headers(5)), 403, "forbidden")
    _is_problem(await api.client.get("/api/v1/bookings/12345", headers=api.headers(5)), 404, "not_found")
    _is_problem(await api.client.get("/no/such/route"), 404, "not_found")
    _is_problem(await api.client.delete("/api/v1/bookings/", headers=api.headers(5)), 405, "method_not_allowed")
    await api.book(5, 1)
    _is_problem(await api.book(6, 1), 409, "insufficient_capacity")
    invalid = await api.client.post("/api/v1/bookings/", json={"event_id": 1}, headers=api.headers(5))
    _is_problem(invalid, 422, "validation_error")
    assert invalid.json()["errors"][0]["field"] == "body.quantity"


async def test_unhandled_error_is_500_without_internals(settings: Settings) -> None:
    async with running_app(settings) as api:
        app: FastAPI = api.client._transport.app  # type: ignore[attr-defined]

        async def boom() -> None:
            raise RuntimeError("SELECT secret FROM internals")

        app.add_api_route("/boom", boom)
        transport_raises = api.client._transport
        transport_raises.raise_app_exceptions = False  # type: ignore[attr-defined]
        response = await api.client.get("/boom")
    _is_problem(response, 500, "internal_error")
    assert "SELECT" not in response.text and "Traceback" not in response.text


async def test_database_down_is_503(redis_url: str) -> None:
    dead_db = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/nothing"
    async with running_app(make_settings(dead_db, redis_url, db_connect_timeout_seconds=1)) as api:
        _is_problem(await api.client.get("/api/v1/bookings/", headers=api.headers(5)), 503, "database_unavailable")
        health = await api.client.get("/api/v1/health")
    assert health.status_code == 503 and health.json()["status"] == "unhealthy"
    assert health.json()["checks"]["database"]["status"] == "down"


async def test_health_everything_up(api: Api) -> None:
    response = await api.client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["checks"]["database"]["status"] == "up" and "latency_ms" in body["checks"]["database"]
    assert body["checks"]["redis"]["status"] == "up"


async def test_health_degraded_fast_when_redis_is_down(database_url: str) -> None:
    async with running_app(make_settings(database_url, f"redis://127.0.0.1:{closed_port()}/0")) as api:
        for _ in range(3):  # open the breaker
            await api.client.get("/api/v1/health")
        started = time.perf_counter()
        for _ in range(10):
            response = await api.client.get("/api/v1/health")
            assert response.status_code == 200 and response.json()["status"] == "degraded"
        elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"health took {elapsed:.2f}s: the breaker should answer at once"


async def test_request_id_round_trip(api: Api) -> None:
    given = await api.client.get("/health", headers={"X-Request-ID": "req-123"})
    assert given.headers["X-Request-ID"] == "req-123"
    generated = await api.client.get("/health")
    assert len(generated.headers["X-Request-ID"]) == 32
    hostile = await api.client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert hostile.headers["X-Request-ID"] != "bad id\twith spaces"


async def test_audit_rows_carry_the_request_id(api: Api) -> None:
    await api.create_event(1, capacity=5)
    headers = {**api.headers(5), "X-Request-ID": "trace-me"}
    await api.client.post("/api/v1/bookings/", json={"event_id": 1, "quantity": 1}, headers=headers)
    audit = await api.client.get("/api/v1/admin/audit/", params={"action": "booking.created"}, headers=api.admin())
    assert audit.json()["items"][0]["request_id"] == "trace-me"


async def test_info_and_metrics(api: Api) -> None:
    info = (await api.client.get("/api/v1/info")).json()
    assert info["name"] == "evently-bookings" and "bookings" in info["capabilities"]
    assert "secret" not in str(info).lower()
    await api.client.get("/health")
    await api.client.get("/api/v1/bookings/1", headers=api.headers(5))
    metrics = (await api.client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/health",status="200"}' in metrics
    # API routes are labelled with their whole template, not the id asked for
    assert 'http_requests_total{method="GET",route="/api/v1/bookings/{booking_id}",status="404"}' in metrics
    assert "db_pool_connections_in_use" in metrics and "redis_circuit_open" in metrics


# The pages that show the document (fastapi-offline's routes), not part of the API.
DOCUMENTATION_PAGES = {"/docs", "/docs/oauth2-redirect", "/redoc"}


def test_openapi_describes_every_route() -> None:
    app = create_app(make_settings("postgresql+asyncpg://postgres@127.0.0.1:9/none", "redis://127.0.0.1:9/0"))
    paths = app.openapi()["paths"]
    # FastAPI includes routers lazily: app.routes holds the included routers, not their routes.
    routes = [r for r in iter_route_contexts(app.routes) if isinstance(r.original_route, APIRoute)]
    routes = [r for r in routes if r.path_format not in DOCUMENTATION_PAGES]
    assert len(routes) >= 28
    for route in routes:
        assert route.original_route.include_in_schema, route.path_format
        for method in route.methods or ():
            assert method.lower() in paths.get(route.path_format, {}), (method, route.path_format)


@contextmanager
def fresh_database(service_urls: tuple[str, str]) -> Iterator[str]:
    """An empty database of its own (dropped after), for the migrations themselves."""
    admin_url = service_urls[0]
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    servers.create_database(admin_url, name)
    try:
        yield servers.with_database(admin_url, name)
    finally:
        servers.drop_database(admin_url, name)


def test_migrations_upgrade_and_downgrade_on_an_empty_database(service_urls: tuple[str, str]) -> None:
    from alembic import command

    with fresh_database(service_urls) as url:
        config = alembic_config(url)
        command.upgrade(config, "head")
        assert "bookings" in _tables(url)
        command.downgrade(config, "base")
        assert _tables(url) <= {"alembic_version"}
        command.upgrade(config, "head")


def test_the_models_and_the_migrations_agree(service_urls: tuple[str, str]) -> None:
    """`alembic check`: a database at head has every table, column, type and index the models declare."""
    from alembic import command

    with fresh_database(service_urls) as url:
        config = alembic_config(url)
        command.upgrade(config, "head")
        command.check(config)  # raises AutogenerateDiffsDetected, naming each difference


def _tables(url: str) -> set[str]:
    import asyncio

    async def read() -> set[str]:
        engine = create_async_engine(url)
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            names = {row[0] for row in rows}
        await engine.dispose()
        return names

    return asyncio.run(read())
