"""Every Redis feature of the service on Redis Sentinel and on a Redis Cluster, real servers of the
test's own, before and after their primary is killed and a replica promoted.

Locks, the deny list, the availability cache, the live feed, the outbox relay (its Stream, one
script call) and the rate limiter. Run by `make test-ha` (marker `ha`): the two
topologies take some fifteen seconds to form.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.lock import event_locks
from app.services.outbox_relay import OutboxRelay
from tests.conftest import Api, make_settings, running_app
from tests.ha.redis_topology import ClusterTopology, SentinelTopology

pytestmark = pytest.mark.ha

RATE_LIMIT = 3
EVENT = 1


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Seconds until `check` first holds (failing the test past `within` seconds)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            if await check():
                return time.monotonic() - started
        except Exception:  # Redis is failing over; try again
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {within} s")


class Exercise:
    """Drives each Redis feature through the running app and checks what Redis holds."""

    def __init__(self, api: Api, relay: OutboxRelay, db: AsyncConnection) -> None:
        self.api = api
        self.relay = relay
        self.db = db
        self.redis: Redis = api.runtime.redis.client
        self.feed: asyncio.Queue[dict[str, Any] | None] | None = None
        self.next_user = 100
        self.cache_version = 0

    def user(self) -> int:
        self.next_user += 1
        return self.next_user

    async def book(self) -> int:
        response = await self.api.book(self.user(), EVENT, 1)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def locks(self) -> bool:
        """Three events' locks taken in one pipeline (keys in three slots) and released by script."""
        gateway, settings = self.api.runtime.redis, self.api.settings
        names = [gateway.key("lock", "event", event_id) for event_id in (7, 8, 9)]
        async with event_locks(gateway, settings, [7, 8, 9]) as held:
            assert held
            assert await self.redis.exists(*names) == 3
        return bool(await self.redis.exists(*names) == 0)

    async def cache_and_feed(self) -> bool:
        """A booking stores the new figures (script in a pipeline) and announces them on the feed."""
        assert self.feed is not None
        while not self.feed.empty():
            self.feed.get_nowait()
        await self.book()
        figures = await asyncio.wait_for(self.feed.get(), timeout=5)
        raw = await self.redis.get(self.api.runtime.redis.key("availability", EVENT))
        assert figures is not None and raw is not None
        cached = orjson.loads(raw)
        return bool(
            cached["version"] == figures["version"] and cached["available_capacity"] == figures["available_capacity"]
        )

    async def cache_of_several_events(self) -> bool:
        """A batch's figures, three events in three slots, stored by one script call per slot."""
        gateway, events = self.api.runtime.redis, (7, 8, 9)
        self.cache_version += 1  # newer at each check: stored again, not refused as already there
        figures = [
            {"event_id": event_id, "version": self.cache_version, "available_capacity": event_id} for event_id in events
        ]
        await self.api.runtime.cache.store_many([(entry, None) for entry in figures])
        stored = [await self.redis.get(gateway.key("availability", event_id)) for event_id in events]
        versions = [orjson.loads(raw)["version"] if raw else None for raw in stored]
        return versions == [self.cache_version] * len(events)

    async def deny_list(self) -> bool:
        """`revoked:user:<id>` and `revoked:jti:<jti>` live in two slots: EXISTS is split by slot."""
        user = self.user()
        await self.redis.set(f"revoked:user:{user}", "1", ex=60)
        response = await self.api.client.get("/api/v1/bookings/", headers=self.api.headers(user))
        return response.status_code == 401

    async def rate_limit(self) -> bool:
        user = self.user()
        statuses = []
        for _ in range(RATE_LIMIT + 1):
            response = await self.api.client.post(
                "/api/v1/waitlist/", json={"event_id": 999, "quantity": 1}, headers=self.api.headers(user)
            )
            statuses.append(response.status_code)
        return statuses[-1] == 429 and 429 not in statuses[:-1]

    async def outbox(self) -> bool:
        """Every message in the Stream once, even when the relay sends a batch a second time."""
        await self.relay.publish_pending()
        await self.db.execute(text("UPDATE outbox SET published_at = NULL"))  # as if never marked
        await self.db.commit()
        await self.relay.publish_pending()
        entries = await self.redis.xrange(self.api.settings.events_stream)
        ids = [fields[b"id"].decode() for _, fields in entries]
        outbox = {str(row[0]) for row in (await self.db.execute(text("SELECT message_id FROM outbox"))).all()}
        await self.db.rollback()
        return len(ids) == len(set(ids)) and set(ids) == outbox and bool(outbox)

    async def all_features(self) -> None:
        assert await self.locks()
        assert await self.cache_and_feed()
        # The cache is written best-effort: a store that met a node not yet known as primary is skipped.
        await eventually(self.cache_of_several_events, 20, "three events' figures stored in three slots")
        assert await self.deny_list()
        assert await self.rate_limit()
        # A batch no replica acknowledged in time (a busy machine, a replica resyncing) is sent on a
        # later pass, as the relay's loop does; a repeat or a loss would never come right.
        await eventually(self.outbox, 20, "every outbox message in the Stream once")


async def exercise_topology(
    database_url: str, db: AsyncConnection, kill_primary: Callable[[], Awaitable[None]], **redis: str | None
) -> None:
    settings = make_settings(
        database_url,
        None,  # type: ignore[arg-type]
        rate_limit_per_minute=RATE_LIMIT,
        redis_socket_timeout_seconds=1.0,  # WAIT may take up to 0.8 s on a busy machine
        **redis,
    )
    async with running_app(settings) as api:
        await api.create_event(EVENT, 1000)
        relay: OutboxRelay = api.client._transport.app.state.relay  # type: ignore[attr-defined]
        check = Exercise(api, relay, db)
        check.feed = await api.runtime.feed.subscribe(EVENT, ready_within=5)
        await check.all_features()

        await kill_primary()
        # Redis is back for the service when a lock is taken again through it.
        await eventually(check.locks, 30, "locks after the failover")
        await eventually(check.cache_and_feed, 30, "cache and feed after the failover")
        await check.all_features()
        health = await api.client.get("/api/v1/health")
        assert health.json()["status"] == "healthy"


async def test_every_redis_feature_on_sentinel_and_after_its_failover(
    sentinel: SentinelTopology, database_url: str, db: AsyncConnection
) -> None:
    async def kill_primary() -> None:
        await asyncio.to_thread(sentinel.wait_replicated)  # what was acknowledged is on the replica
        old = sentinel.kill_primary()
        await asyncio.to_thread(sentinel.wait_for_new_primary, old)
        await asyncio.to_thread(sentinel.bring_back, old)  # the relay waits for a replica (below)

    await exercise_topology(
        database_url,
        db,
        kill_primary,
        redis_sentinels=sentinel.sentinels,
        redis_sentinel_service="mymaster",
        redis_wait_replicas="1",
    )


async def test_every_redis_feature_on_cluster_and_after_a_primary_is_replaced(
    cluster: ClusterTopology, database_url: str, db: AsyncConnection
) -> None:
    settings = make_settings(database_url, "redis://unused")
    stream = settings.events_stream

    async def kill_primary() -> None:
        slot = key_slot(stream.encode())  # the Stream's primary: the relay's script must move with it
        await asyncio.to_thread(cluster.wait_replicated)
        old = cluster.kill_primary_of_slot(slot)
        await asyncio.to_thread(cluster.wait_for_promotion, slot, old)
        await asyncio.to_thread(cluster.bring_back, old)  # the relay waits for a replica

    await exercise_topology(database_url, db, kill_primary, redis_cluster_nodes=cluster.nodes, redis_wait_replicas="1")
