"""The async engines and sessionmakers, created in the application's lifespan.

After a failover the pool finds the new primary by itself: a connection that fails as lost, or
that lands on a server no longer writable (SQLSTATE 25006) or matching no host's role, counts as a
disconnect. SQLAlchemy then discards that connection and every other one the pool holds (they
point at the same old primary), and new connections let asyncpg pick the host that is now the
writable one (`target_session_attrs=read-write`). A connection the server has closed while it sat
in the pool is caught before it is used: the driver has seen it closed, or a checkout of a pooled
connection idle at least `DB_CHECK_IDLE_SECONDS` checks it in one round trip (`_ping_on_checkout`).
Nothing is added on a query that succeeds.
"""

from __future__ import annotations

import functools
import json
import math
import time

import orjson
from asyncpg.exceptions import InterfaceError, TargetServerAttributeNotMatched
from sqlalchemy import Pool, event
from sqlalchemy.engine import AdaptedConnection, ExceptionContext
from sqlalchemy.exc import DisconnectionError, InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from app.core import metrics
from app.core.config import Settings

# Kept in a pooled connection's info:
FRESH = "opened_since_checked"  # not to be checked at its first checkout
RETURNED_AT = "returned_at"  # time.monotonic() when it was last given back

# read_only_sql_transaction (a demoted primary), admin_shutdown, crash_shutdown, cannot_connect_now
FAILOVER_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03"})


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    """The engine on `url`, by default DATABASE_URL's primary."""
    engine = create_async_engine(
        url or settings.sqlalchemy_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        # Audit rows and outbox messages are JSONB written on every booking: orjson, not json.
        json_serializer=_json_text,
        json_deserializer=orjson.loads,
        connect_args=_connect_args(settings),
    )
    # The check first: a connection that fails it is replaced and the checkout's listeners run again
    # for the new one, so the ones after it see each checkout once.
    event.listen(engine.sync_engine.pool, "connect", _mark_fresh)
    event.listen(engine.sync_engine.pool, "checkin", _mark_returned)
    event.listen(
        engine.sync_engine.pool, "checkout", functools.partial(_ping_on_checkout, settings.db_check_idle_seconds)
    )
    _count_connections(engine.sync_engine.pool, settings.db_pool_size)
    event.listen(engine.sync_engine, "handle_error", _failover_is_disconnect)
    return engine


def _connect_args(settings: Settings) -> dict[str, object]:
    args: dict[str, object] = {
        "timeout": settings.db_connect_timeout_seconds,
        "command_timeout": settings.db_command_timeout_seconds,
        "server_settings": {"application_name": settings.service_name},
    }
    if not settings.db_prepared_statements:
        # Neither asyncpg's cache nor the dialect's: each statement is then prepared unnamed and
        # parsed again in the message that runs it, so nothing outlives its transaction on a
        # server connection the pooler may hand to another client next.
        args |= {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
    return args


def create_read_engine(settings: Settings) -> AsyncEngine | None:
    """The engine on DATABASE_READ_URL's replicas, or None when it is not set."""
    url = settings.sqlalchemy_read_database_url
    return create_engine(settings, url) if url else None


def _mark_fresh(_dbapi_connection: AdaptedConnection, record: ConnectionPoolEntry) -> None:
    record.info[FRESH] = True


def _mark_returned(_dbapi_connection: AdaptedConnection | None, record: ConnectionPoolEntry) -> None:
    record.info[RETURNED_AT] = time.monotonic()


def _ping_on_checkout(
    idle_seconds: float,
    dbapi_connection: AdaptedConnection,
    record: ConnectionPoolEntry,
    _proxy: PoolProxiedConnection,
) -> None:
    """`pool_pre_ping`'s check in one round trip instead of three. The dialect's ping sends `;` as
    a prepared statement, so it wraps it in a transaction of its own (BEGIN, `;`, ROLLBACK) for a
    transaction-mode pooler's sake; a simple query (asyncpg's `execute` without arguments) is one
    message, safe there too (asyncpg cannot read the answer to an empty one, hence `SELECT 1`).
    Each round trip waits for a busy worker's event loop, and the booking batch takes a connection
    for every batch. A connection just opened is not checked, as pre-ping does not check it, nor one
    given back less than `idle_seconds` ago: under load every connection is (HikariCP skips its
    check within 500 ms of a connection's last use alike). A connection the driver has seen closed
    (the server ended it while it sat in the pool, as a restart or a failover does) is not handed
    out, checked or not: knowing that costs no round trip. One cut since without the driver seeing
    it (a network failure) fails its next statement instead, which discards the pool's connections
    as a failed check does.

    A connection found closed, or on a server that is no longer the one wanted, discards the pool's
    older connections with it, as pre-ping does (the server restarted or failed over); one the
    driver cannot use any more is discarded alone. The pool then connects again. Any other failure
    (a timeout, say) is the checkout's, as with pre-ping."""
    fresh = record.info.pop(FRESH, False)
    if dbapi_connection.driver_connection.is_closed():
        # The driver saw the server close it while it sat in the pool: known without a round trip.
        raise InvalidatePoolError("connection closed while in the pool")
    if fresh:
        return
    if time.monotonic() - record.info.get(RETURNED_AT, -math.inf) < idle_seconds:
        return
    try:
        dbapi_connection.run_async(lambda connection: connection.execute("SELECT 1"))
    except Exception as exc:
        if dbapi_connection.driver_connection.is_closed() or is_failover_error(exc):
            raise InvalidatePoolError(f"connection lost: {exc!r}") from exc
        if isinstance(exc, InterfaceError):
            raise DisconnectionError(f"connection unusable: {exc!r}") from exc
        raise


def _failover_is_disconnect(context: ExceptionContext) -> None:
    if is_failover_error(context.original_exception):
        context.is_disconnect = True


def is_failover_error(error: BaseException | None) -> bool:
    """The server is not (or no longer) the one this connection wants: look for another. The
    driver's error is `error` or, once the dialect has translated it, its cause."""
    for candidate in (error, getattr(error, "__cause__", None)):
        if isinstance(candidate, TargetServerAttributeNotMatched):
            return True
        sqlstate = str(getattr(candidate, "sqlstate", "") or "")
        if sqlstate in FAILOVER_SQLSTATES or sqlstate.startswith("08"):
            return True
    return False


def _count_connections(pool: Pool, size: int) -> None:
    """Keep the pool gauges current in every worker as connections come and go, not only in the
    worker that answers a scrape."""
    metrics.DB_POOL_SIZE.set(size)
    event.listen(pool, "checkout", lambda *_: metrics.DB_POOL_CHECKED_OUT.inc())
    event.listen(pool, "checkin", lambda *_: metrics.DB_POOL_CHECKED_OUT.dec())


def _json_text(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # orjson refuses text that is not valid UTF-8 (an unpaired surrogate) as it refuses a type
        # it cannot encode. The standard library keeps such text, so that it fails where any text
        # column's would, as a value the database cannot take (the hot batch then refuses only the
        # request that sent it); a type it cannot encode it still refuses.
        return json.dumps(value, ensure_ascii=False)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
