"""One Redis client for the service, guarded by a circuit breaker.

The client speaks to one server (`REDIS_URL`), to the primary Sentinel names (`REDIS_SENTINELS`),
or to a Redis Cluster (`REDIS_CLUSTER_NODES`): `build_redis_client` is the one place that knows.

A single server's pool holds at most `REDIS_MAX_CONNECTIONS` connections; when all are busy a call waits
up to `REDIS_POOL_TIMEOUT_SECONDS` for one. A wait that runs out is load, not an outage: it raises
`RedisPoolTimeoutError`, which the breaker does not count (it is still a `ConnectionError`, so code
that merely degrades without Redis degrades the same way). Sentinel and Cluster clients keep
redis-py's own pools, which do not wait (see docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import Sentinel
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core import metrics
from app.core.circuit_breaker import CircuitBreaker, CircuitOpenError
from app.core.config import Settings
from app.core.logging import get_logger

T = TypeVar("T")
CONNECTION_MODULE = os.path.join("redis", "asyncio", "connection.py")
MAX_RECONNECT_PAUSE_SECONDS = 10.0
log = get_logger(__name__)

REDIS_FAILURES: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    OSError,
)
# What a caller catches to mean "Redis is not there right now".
RedisUnavailable: tuple[type[BaseException], ...] = (*REDIS_FAILURES, CircuitOpenError)


class RedisPoolTimeoutError(MaxConnectionsError):
    """Every pooled connection stayed busy for REDIS_POOL_TIMEOUT_SECONDS: Redis is busy, not down."""


class WaitingConnectionPool(BlockingConnectionPool):
    """redis-py's blocking pool, raising `RedisPoolTimeoutError` when the wait for a connection
    runs out (redis-py raises a plain `ConnectionError`, the same as for a refused connection)."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call,no-any-return]
        except RedisConnectionError as exc:
            if type(exc) is RedisConnectionError and isinstance(exc.__cause__, TimeoutError):
                raise RedisPoolTimeoutError(f"no Redis connection free within {self.timeout} s") from exc
            raise


def _report_circuit(opened: bool) -> None:
    metrics.REDIS_CIRCUIT_OPEN.set(1 if opened else 0)
    if opened:
        log.warning("redis_circuit_opened")
    else:
        log.info("redis_circuit_closed")


def build_redis_client(settings: Settings, *, subscriber: bool = False) -> Redis:
    """The client for the configured topology. A `subscriber` client has no read timeout (it
    waits for messages) and keeps its socket alive instead.

    A RedisCluster is typed as a Redis: it answers every command the service sends, and callers
    need not know which topology runs.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_socket_timeout_seconds,
        "decode_responses": False,
    }
    if subscriber:
        options |= {"socket_keepalive": True, "health_check_interval": 15}
    else:
        options |= {"socket_timeout": settings.redis_socket_timeout_seconds, "health_check_interval": 30}
    password = settings.redis_password.get_secret_value() or None
    if settings.redis_sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            settings.redis_sentinel_nodes,
            sentinel_kwargs={
                "socket_timeout": settings.redis_socket_timeout_seconds,
                "socket_connect_timeout": settings.redis_socket_timeout_seconds,
            },
        )
        master: Redis = sentinel.master_for(
            settings.redis_sentinel_service,
            password=password,
            db=settings.redis_db,
            ssl=settings.redis_use_tls,
            **options,
        )
        return master
    if settings.redis_cluster_nodes:
        nodes = [ClusterNode(host, port) for host, port in settings.redis_cluster_startup_nodes]
        cluster = RedisCluster(startup_nodes=nodes, password=password, ssl=settings.redis_use_tls, **options)
        return cast(Redis, cluster)
    if subscriber:
        return Redis.from_url(settings.redis_connection_url, **options)
    pool = WaitingConnectionPool.from_url(
        settings.redis_connection_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_seconds,
        **options,
    )
    return Redis.from_pool(pool)


async def close_redis_client(client: Redis) -> None:
    """Close the client, and the Sentinel connections behind it if it has any."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    await client.aclose()
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


def queue_script(pipe: Any, script: AsyncScript | str, keys: Sequence[Any], args: Sequence[Any]) -> None:
    """Add a script call to a pipeline, as its text (EVAL; Redis keeps it compiled, by its text).
    By its digest (EVALSHA), redis-py would first ask SCRIPT EXISTS in a round trip of its own on
    every execute of the pipeline, and a cluster pipeline has no way to load a script on the node
    it reaches (a promoted replica, a restarted node, starts with no script cached)."""
    body = script if isinstance(script, str) else script.script
    pipe.eval(body if isinstance(body, str) else bytes(body).decode(), len(keys), *keys, *args)


def queue_script_per_slot(
    pipe: Any, script: str, keys: Sequence[str], args_of_keys: Sequence[Sequence[Any]], shared: Sequence[Any] = ()
) -> list[list[int]]:
    """Add calls of a script taking many keys to a pipeline: one call for all of them, or on a
    Redis Cluster one per slot (a script's keys must share one). Its ARGV is `shared`, then each
    key's own arguments in the keys' order. Answers the keys' positions in each call, in the
    pipeline's order: `per_key` puts the calls' answers (a list each) back in the keys' order.
    A script error on one key ends its call: the keys after it in that call are left undone."""
    positions_per_slot: dict[int, list[int]] = {}
    cluster = isinstance(pipe, ClusterPipeline)
    for position, key in enumerate(keys):
        positions_per_slot.setdefault(key_slot(key.encode()) if cluster else 0, []).append(position)
    for positions in positions_per_slot.values():
        args = [arg for position in positions for arg in args_of_keys[position]]
        queue_script(pipe, script, [keys[position] for position in positions], [*shared, *args])
    return list(positions_per_slot.values())


def per_key(positions_per_call: list[list[int]], answers: Sequence[Sequence[Any]]) -> list[Any]:
    """The answers of `queue_script_per_slot`'s calls, one per key, in the keys' order."""
    by_key: list[Any] = [None] * sum(len(positions) for positions in positions_per_call)
    for positions, call_answers in zip(positions_per_call, answers, strict=True):
        for position, answer in zip(positions, call_answers, strict=True):
            by_key[position] = answer
    return by_key


def node_client(settings: Settings, host: str, port: int, *, subscriber: bool = False) -> Redis:
    """A plain client on one node of a Cluster."""
    timeouts: dict[str, Any] = {"socket_connect_timeout": settings.redis_socket_timeout_seconds}
    if subscriber:
        timeouts |= {"socket_keepalive": True, "health_check_interval": 15}
    else:
        timeouts["socket_timeout"] = settings.redis_socket_timeout_seconds
    password = settings.redis_password.get_secret_value() or None
    return Redis(host=host, port=port, password=password, ssl=settings.redis_use_tls, **timeouts)


async def call_script_replicated(
    client: Redis, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], settings: Settings
) -> Any:
    """Run a script; with REDIS_WAIT_REPLICAS, also wait (WAIT, on the connection that wrote) until
    that many replicas have its writes, and raise a Redis TimeoutError when they have not: the
    caller then counts it as not done, so a failover cannot lose what it goes on to treat as sent.
    On a Cluster both go to the node of the first key, on a connection of their own."""
    replicas = settings.redis_wait_replicas
    if not replicas:
        return await script(keys=keys, args=args, client=client)
    if not isinstance(client, RedisCluster):
        return await _script_then_wait(client, script, keys, args, settings)
    await client.initialize()
    node = client.get_node_from_key(keys[0])
    if node is None:
        raise RedisConnectionError("no node serves the script's keys")
    target = node_client(settings, node.host, node.port)
    try:
        return await _script_then_wait(target, script, keys, args, settings)
    except (ResponseError, RedisConnectionError, ConnectionError) as exc:  # MOVED after a failover, or the node gone
        await client.nodes_manager.initialize()  # learn the new primary before the next try
        raise RedisConnectionError(f"the node of {keys[0]!r} did not take the script") from exc
    finally:
        await target.aclose()


async def _script_then_wait(
    client: Redis, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], settings: Settings
) -> Any:
    replicas = settings.redis_wait_replicas
    wait_ms = max(1, int(settings.redis_socket_timeout_seconds * 800))  # an answer before the socket gives up
    pipe = client.pipeline(transaction=False)
    queue_script(pipe, script, keys, args)
    pipe.wait(replicas, wait_ms)
    result, acknowledged = await pipe.execute()
    if acknowledged < replicas:
        raise RedisTimeoutError(f"{acknowledged} of {replicas} replicas have the writes")
    return result


# A cluster pipeline refuses PUBLISH (it has no key to route by); a script without keys runs on
# any node, and a PUBLISH reaches every node's subscribers.
PUBLISH_SCRIPT = "return redis.call('PUBLISH', ARGV[1], ARGV[2])"


def queue_publish(pipe: Any, channel: str, message: bytes) -> None:
    """Add a PUBLISH to a pipeline, on any topology."""
    if isinstance(pipe, ClusterPipeline):
        pipe.eval(PUBLISH_SCRIPT, 0, channel, message)
    else:
        pipe.publish(channel, message)


def _closed_transport_is_connection_error(
    operation: Callable[[Redis], Awaitable[T]],
) -> Callable[[Redis], Awaitable[T]]:
    """redis-py's cluster client, writing on a connection to a node that has just died, can fail
    inside its connection code with the event loop's "handler is closed" RuntimeError or with an
    AttributeError on a writer already dropped, instead of a connection error: it is one."""

    async def guarded(client: Redis) -> T:
        try:
            return await operation(client)
        except (RuntimeError, AttributeError) as exc:
            if not _raised_in_connection_code(exc):
                raise
            raise RedisConnectionError(f"{type(exc).__name__}: {exc}") from exc

    return guarded


def _raised_in_connection_code(exc: BaseException) -> bool:
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename.endswith(CONNECTION_MODULE):
            return True
        frame = frame.tb_next
    return False


class RedisGateway:
    """The Redis client plus the breaker every call goes through, and the key prefix."""

    def __init__(self, settings: Settings) -> None:
        self.client: Redis = build_redis_client(settings)
        self._cluster = isinstance(self.client, RedisCluster)
        self.breaker = CircuitBreaker(
            settings.redis_breaker_failure_threshold,
            settings.redis_breaker_reset_seconds,
            REDIS_FAILURES,
            on_state_change=_report_circuit,
            not_failures=(RedisPoolTimeoutError,),
        )
        self.prefix = settings.redis_key_prefix
        self._settings = settings

    @asynccontextmanager
    async def subscription(self, *channels: str) -> AsyncIterator[PubSub]:
        """Subscribed to `channels` on a connection of its own (no read timeout while it waits),
        closed on the way out however the body ends."""
        client = await self._subscriber_client()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            yield pubsub
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await close_redis_client(client)

    async def _subscriber_client(self) -> Redis:
        """A plain client on one Cluster node, picked at random so that a dead node is left
        behind on a later try (a PUBLISH reaches every node of a cluster); else the topology's."""
        if not isinstance(self.client, RedisCluster):
            return build_redis_client(self._settings, subscriber=True)
        await self.client.initialize()
        node = random.choice(self.client.get_nodes())
        return node_client(self._settings, node.host, node.port, subscriber=True)

    async def keep_subscribed(
        self, channels: Sequence[str], listen: Callable[[PubSub], Awaitable[None]], name: str
    ) -> None:
        """Subscribe and run `listen` until it returns. When the subscription or `listen` fails,
        subscribe again after a pause that doubles each time (0.5 s once a subscription worked)."""
        backoff = 0.5
        while True:
            try:
                async with self.subscription(*channels) as pubsub:
                    backoff = 0.5
                    await listen(pubsub)
                    return
            except Exception as exc:  # Redis gone, or anything else: reconnect after a pause
                log.warning("subscription_reconnecting", subscriber=name, error=type(exc).__name__, backoff=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RECONNECT_PAUSE_SECONDS)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(part) for part in parts)

    async def call(self, name: str, operation: Callable[[Redis], Awaitable[T]]) -> T:
        if self._cluster:
            operation = _closed_transport_is_connection_error(operation)
        try:
            return await self.breaker.call(lambda: operation(self.client))
        except RedisPoolTimeoutError:
            metrics.REDIS_POOL_TIMEOUTS.labels(name).inc()
            raise
        except REDIS_FAILURES:
            metrics.REDIS_FAILURES.labels(name).inc()
            raise

    @property
    def available(self) -> bool:
        return not self.breaker.is_open

    async def close(self) -> None:
        await close_redis_client(self.client)
