"""Several PostgreSQL hosts in DATABASE_URL, and what the pool does when a server stops being the
writable primary. On the machine's own PostgreSQL: a closed port stands for a dead host, and a
session set read-only stands for a demoted primary (nothing is reconfigured)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db.session import create_engine
from migrate import alembic_config
from tests import servers
from tests.conftest import make_settings, running_app
from tests.redis_server import free_port


def several_hosts(database_url: str, query: str = "") -> str:
    """libpq's comma form: a host nobody listens on first, then the real one."""
    parts = urlsplit(database_url)
    hosts = f"127.0.0.1:{free_port()},{parts.hostname}:{parts.port or 5432}"
    return f"postgresql://{parts.username}@{hosts}{parts.path}{query}"


async def test_service_finds_the_live_host_of_several(database_url: str, redis_url: str) -> None:
    async with running_app(make_settings(several_hosts(database_url), redis_url)) as api:
        await api.create_event(1, 5)
        assert (await api.book(2, 1)).status_code == 201


async def test_no_host_in_the_wanted_role_is_503_not_500(database_url: str, redis_url: str) -> None:
    """While a failover runs no host may be writable yet: asyncpg says no host matches, and that is
    the database being unavailable for a moment."""
    settings = make_settings(several_hosts(database_url, "?target_session_attrs=standby"), redis_url)
    async with running_app(settings) as api:
        response = await api.client.get("/api/v1/bookings/", headers=api.headers(2))
    assert response.status_code == 503
    assert response.headers["Retry-After"]


async def test_a_read_only_server_drops_the_pools_connections(database_url: str, redis_url: str) -> None:
    """A demoted primary answers writes with SQLSTATE 25006: that connection and the pooled ones
    beside it are dropped, and the next checkout connects afresh (and so finds the new primary)."""
    engine = create_engine(make_settings(database_url, redis_url, db_pool_size=2))
    try:
        async with engine.connect() as connection:
            first_pid = await connection.scalar(text("SELECT pg_backend_pid()"))
            await connection.execute(text("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"))
            await connection.commit()
            with pytest.raises(DBAPIError) as failure:
                await connection.execute(text("UPDATE event_availability SET version = version WHERE false"))
        assert failure.value.connection_invalidated
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT pg_backend_pid()")) != first_pid
            assert await connection.scalar(text("SHOW transaction_read_only")) == "off"
    finally:
        await engine.dispose()


@pytest.fixture
def lagging_replica(database_url: str) -> Iterator[str]:
    """A second database with the schema and none of the rows: a replica that has not caught up."""
    name = f"replica_{uuid.uuid4().hex[:8]}"
    servers.create_database(database_url, name)
    url = servers.with_database(database_url, name)
    command.upgrade(alembic_config(url), "head")
    try:
        yield url
    finally:
        servers.drop_database(database_url, name)


async def test_admin_lists_read_the_replicas_and_users_the_primary(
    database_url: str, redis_url: str, lagging_replica: str
) -> None:
    settings = make_settings(database_url, redis_url, database_read_url=lagging_replica)
    async with running_app(settings) as api:
        await api.create_event(1, 5)
        booking = (await api.book(2, 1)).json()
        mine = await api.client.get("/api/v1/bookings/", headers=api.headers(2))
        assert [item["id"] for item in mine.json()["items"]] == [booking["id"]]
        own = await api.client.get(f"/api/v1/bookings/{booking['id']}", headers=api.headers(2))
        assert own.status_code == 200
        for path in ("bookings/", "audit/", "waitlist/", "availability/"):
            listed = await api.client.get(f"/api/v1/admin/{path}", headers=api.admin())
            assert listed.json()["total"] == 0, path  # the replica has not caught up


@pytest.mark.parametrize(("prepared", "named_statements"), [(True, True), (False, False)])
async def test_prepared_statements_off_leaves_none_on_the_server(
    database_url: str, redis_url: str, prepared: bool, named_statements: bool
) -> None:
    """DB_PREPARED_STATEMENTS=false (for a transaction-mode pooler): no named statement outlives its
    use on the server connection, where the next transaction through the pooler would miss it."""
    engine = create_engine(make_settings(database_url, redis_url, db_prepared_statements=prepared))
    try:
        async with engine.connect() as connection:
            await connection.scalar(text("SELECT count(*) FROM event_availability"))
            await connection.commit()
            left = await connection.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
        assert bool(left) is named_statements
    finally:
        await engine.dispose()
