"""Messages out (outbox, channels, Stream), messages in (events service), cache and live stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import clock
from app.core.config import Settings
from app.db.redis import RedisGateway
from app.services import events_inbound
from app.services.availability_feed import AvailabilityFeed
from app.services.outbox_relay import RELAY_LOCK_KEY, OutboxRelay
from tests.checks import assert_invariant, count
from tests.conftest import Api, make_settings, running_app
from tests.redis_server import ThrowawayRedis, free_port
from tests.support import concurrent_writer, served_api


def relay_of(api: Api) -> OutboxRelay:
    relay: OutboxRelay = api.client._transport.app.state.relay  # type: ignore[attr-defined]
    return relay


async def stream_messages(redis: Redis, stream: str) -> list[dict[str, Any]]:
    entries = await redis.xrange(stream)
    return [json.loads(fields[b"data"]) for _, fields in entries]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_lifecycle_messages_reach_channels_and_stream(api: Api, redis: Redis) -> None:
    settings = api.settings
    pubsub = redis.pubsub()
    await pubsub.psubscribe(f"{settings.events_channel_prefix}:*")
    await api.create_event(1, capacity=1)
    booking = (await api.book(5, 1)).json()
    await api.client.put(f"/api/v1/admin/bookings/{booking['id']}/confirm", headers=api.admin())
    await api.client.post("/api/v1/waitlist/", json={"event_id": 1, "quantity": 1}, headers=api.headers(6))
    await api.client.put(f"/api/v1/bookings/{booking['id']}/cancel", headers=api.headers(5))
    assert await relay_of(api).publish_pending() > 0

    seen: dict[str, dict[str, Any]] = {}
    deadline = asyncio.get_running_loop().time() + 2
    while asyncio.get_running_loop().time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            seen.setdefault(message["channel"].decode(), json.loads(message["data"]))
        elif len(seen) >= 6:
            break
    await pubsub.aclose()
    prefix = settings.events_channel_prefix
    expected = {
        "created": "BookingCreated",
        "confirmed": "BookingConfirmed",
        "cancelled": "BookingCancelled",
        "waitlist_joined": "WaitlistJoined",
        "waitlist_notified": "WaitlistNotified",
        "availability_changed": "AvailabilityChanged",
    }
    for kind, message_type in expected.items():
        message = seen[f"{prefix}:{kind}"]
        assert message["type"] == message_type
        assert {"id", "occurred_at", "schema_version", "event_id"} <= message.keys()
    created = seen[f"{prefix}:created"]
    assert created["booking_id"] == booking["id"] and created["user_id"] == 5
    assert created["booking_data"]["booking_reference"] == booking["booking_reference"]
    notified = seen[f"{prefix}:waitlist_notified"]
    assert notified["waitlist_data"]["status"] == "notified" and "waitlist_entry_id" in notified
    assert "secret" not in json.dumps(seen).lower()

    in_stream = await stream_messages(redis, settings.events_stream)
    assert [m["type"] for m in in_stream].count("BookingCreated") == 1
    assert len({m["id"] for m in in_stream}) == len(in_stream)
    group = await redis.xgroup_create(settings.events_stream, "analytics", id="0")
    assert group
    read = await redis.xreadgroup("analytics", "worker-1", {settings.events_stream: ">"}, count=1000)
    assert len(read[0][1]) == len(in_stream)


async def test_a_rolled_back_transaction_publishes_nothing(
    database_url: str, settings: Settings, db: AsyncConnection, redis: Redis
) -> None:
    async with running_app(settings.model_copy(update={"version_conflict_retries": 0})) as api:
        await api.create_event(1, capacity=5)
        # The booking's transaction writes its booking, audit row and BookingCreated message, then its
        # last statement (the capacity UPDATE) finds the event changed by another writer: rolled back.
        async with concurrent_writer(database_url, settings, 1) as writer, asyncio.timeout(60):
            refused, stale = await writer.make_stale(lambda: api.book(5, 1, 2))
        assert stale == 1
        assert (refused.status_code, refused.json()["code"]) == (409, "version_conflict")
        assert await count(db, "outbox", "kind <> 'availability_changed'") == 0
        assert await relay_of(api).publish_pending() == 1  # the event's creation, nothing else
        published = await stream_messages(redis, api.settings.events_stream)
        assert [m["type"] for m in published] == ["AvailabilityChanged"]
        assert await count(db, "bookings") == 0


async def test_messages_survive_redis_outage_in_order(database_url: str, db: AsyncConnection) -> None:
    server = ThrowawayRedis()
    server.start()
    settings = make_settings(
        database_url, server.url, redis_socket_timeout_seconds=0.2, redis_breaker_reset_seconds=0.5
    )
    try:
        async with running_app(settings) as api:
            await api.create_event(1, capacity=100)
            before = [(await api.book(10 + i, 1)).status_code for i in range(5)]
            server.stop()
            during = [(await api.book(20 + i, 1)).status_code for i in range(10)]
            health = (await api.client.get("/api/v1/health")).json()
            assert before + during == [201] * 15
            assert health["status"] == "degraded" and health["checks"]["database"]["outbox_backlog"] == 16
            server.start()
            await asyncio.sleep(0.6)  # the breaker's cool-off
            assert await relay_of(api).publish_pending() == 16
            assert (await api.client.get("/api/v1/health")).json()["status"] == "healthy"
            check = Redis.from_url(server.url)
            messages = await stream_messages(check, settings.events_stream)
            await check.aclose()
        ids = [m["id"] for m in messages]
        assert len(ids) == len(set(ids)) == 16
        created = [m["booking_id"] for m in messages if m["type"] == "BookingCreated"]
        assert created == sorted(created) and len(created) == 15
        assert await count(db, "outbox", "published_at IS NULL") == 0
        await assert_invariant(db)
    finally:
        server.close()


async def test_two_relays_publish_each_message_once(settings: Settings, redis: Redis) -> None:
    async with running_app(settings) as first, running_app(settings) as second:
        await first.create_event(1, capacity=500)
        await asyncio.gather(*(first.book(100 + i, 1) for i in range(200)))
        await asyncio.gather(relay_of(first).publish_pending(), relay_of(second).publish_pending())
        await asyncio.gather(relay_of(first).publish_pending(), relay_of(second).publish_pending())
    ids = [m["id"] for m in await stream_messages(redis, settings.events_stream)]
    assert len(ids) == len(set(ids)) == 201


async def test_a_repeated_batch_reaches_the_stream_once(api: Api, db: AsyncConnection, redis: Redis) -> None:
    await api.create_event(1, capacity=5)
    await api.book(5, 1)
    assert await relay_of(api).publish_pending() == 2
    await as_if_never_marked(db)
    assert await relay_of(api).publish_pending() == 2  # marked now, sent no second time
    ids = [m["id"] for m in await stream_messages(redis, api.settings.events_stream)]
    assert len(ids) == len(set(ids)) == 2
    # The Stream's own entries are how a repeat is recognised: nothing else is kept per message.
    assert [key async for key in redis.scan_iter(match=f"{api.settings.redis_key_prefix}*outbox*")] == []


async def test_a_message_that_committed_late_goes_out_before_a_repeated_batch(
    api: Api, db: AsyncConnection, redis: Redis
) -> None:
    await api.create_event(1, capacity=5)
    await api.book(5, 1)
    assert await relay_of(api).publish_pending() == 2
    await as_if_never_marked(db)
    # Written before the batch, committed after it was sent: the lowest id, not yet published.
    late = await db.execute(
        text(
            "INSERT INTO outbox (id, message_id, kind, event_id, payload, created_at) "
            "SELECT outbox.id - 100, fresh.id, kind, event_id, jsonb_set(payload, '{id}', to_jsonb(fresh.id::text)), "
            "created_at FROM outbox, (SELECT gen_random_uuid() AS id) AS fresh ORDER BY outbox.id LIMIT 1 "
            "RETURNING message_id"
        )
    )
    late_id = str(late.scalar_one())
    await db.commit()
    assert await relay_of(api).publish_pending() == 3
    ids = [m["id"] for m in await stream_messages(redis, api.settings.events_stream)]
    assert len(ids) == len(set(ids)) == 3 and ids[-1] == late_id
    assert await count(db, "outbox", "published_at IS NULL") == 0


async def as_if_never_marked(db: AsyncConnection) -> None:
    """The relay's batch reached Redis, but its marking never committed."""
    await db.rollback()
    await db.execute(text("UPDATE outbox SET published_at = NULL"))
    await db.commit()


async def until_published(redis: Redis, stream: str, messages: int, within: float = 2.5) -> None:
    for _ in range(int(within / 0.05)):
        if len(await stream_messages(redis, stream)) >= messages:
            return
        await asyncio.sleep(0.05)


async def test_relay_wakes_after_commit(database_url: str, redis_url: str, redis: Redis) -> None:
    settings = make_settings(database_url, redis_url, background_tasks_enabled=True, outbox_poll_seconds=30)
    async with running_app(settings) as api:
        await api.create_event(1, capacity=5)
        await api.book(5, 1)
        await until_published(redis, settings.events_stream, 2)
    assert [m["type"] for m in await stream_messages(redis, settings.events_stream)] == [
        "AvailabilityChanged",
        "BookingCreated",
    ]


async def test_relay_passes_keep_their_least_interval(database_url: str, redis_url: str, redis: Redis) -> None:
    """A quiet relay publishes a commit's messages at once; commits right after a pass wait for the
    next one, OUTBOX_MIN_INTERVAL_MS after it (the Stream's entry ids carry Redis's time in ms)."""
    settings = make_settings(
        database_url, redis_url, background_tasks_enabled=True, outbox_poll_seconds=30, outbox_min_interval_ms=400
    )
    stream = settings.events_stream
    async with running_app(settings) as api:
        await api.create_event(1, capacity=5)
        await until_published(redis, stream, 1)
        await asyncio.sleep(0.5)  # quiet for longer than the interval
        seconds, microseconds = await redis.time()
        booked_at = seconds * 1000 + microseconds // 1000
        await api.book(5, 1)
        await until_published(redis, stream, 2)
        await api.book(6, 1)  # right after that pass
        await until_published(redis, stream, 3)
    published_at = [int(entry_id.split(b"-")[0]) for entry_id, _ in await redis.xrange(stream)]
    assert published_at[1] - booked_at < 300  # at once
    assert published_at[2] - published_at[1] >= 350  # the interval, less the first pass's own time


async def test_relay_looks_again_soon_when_another_instance_holds_its_lock(
    database_url: str, redis_url: str, redis: Redis, db: AsyncConnection
) -> None:
    settings = make_settings(database_url, redis_url, background_tasks_enabled=True, outbox_poll_seconds=30)
    async with running_app(settings) as api:
        await api.create_event(1, capacity=5)
        await until_published(redis, settings.events_stream, 1)
        await db.execute(text("SELECT pg_advisory_lock(:key)"), {"key": RELAY_LOCK_KEY})  # "another relay"
        await api.book(5, 1)
        await asyncio.sleep(0.3)
        assert len(await stream_messages(redis, settings.events_stream)) == 1  # woken, but the lock was taken
        await db.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": RELAY_LOCK_KEY})
        await db.commit()
        await until_published(redis, settings.events_stream, 2)  # well before the 30 s poll
    assert [m["type"] for m in await stream_messages(redis, settings.events_stream)] == [
        "AvailabilityChanged",
        "BookingCreated",
    ]


async def test_retention_removes_only_published_rows(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    await api.book(5, 1)
    await relay_of(api).publish_pending()
    await api.book(6, 1)  # unpublished
    clock.advance(timedelta(hours=api.settings.outbox_retention_hours + 1))
    assert await relay_of(api).apply_retention() == 2
    assert await count(db, "outbox") == 1 and await count(db, "outbox", "published_at IS NULL") == 1


def announcement(kind: str, event_id: int, **data: Any) -> bytes:
    body: dict[str, Any] = {"type": kind, "event_id": event_id}
    if kind != "EventDeleted":
        body["event_data"] = {
            "id": event_id,
            "name": "Concert",
            "capacity": 10,
            "price": "30.00",
            "status": "published",
            "event_date": "2027-01-01T20:00:00Z",
            **data,
        }
    return json.dumps(body).encode()


async def test_events_service_announcements(api: Api, db: AsyncConnection) -> None:
    runtime = api.runtime
    assert await events_inbound.handle(runtime, announcement("EventCreated", 7)) == "applied"
    booking = await api.book(5, 7, 4)
    assert booking.status_code == 201
    figures = await api.availability(7)
    assert (figures["event_name"], figures["price"], figures["total_capacity"]) == ("Concert", "30.00", 10)

    shrink = announcement("EventUpdated", 7, capacity=3, name="Concert (moved)")
    assert await events_inbound.handle(runtime, shrink) == "applied"
    figures = await api.availability(7)
    assert figures["total_capacity"] == 10 and figures["event_name"] == "Concert (moved)"
    assert await count(db, "audit_log", "action = 'availability.capacity_refused'") == 1

    cancelled = announcement("EventUpdated", 7, status="cancelled")
    assert await events_inbound.handle(runtime, cancelled) == "applied"
    closed = await api.book(6, 7, 1)
    assert closed.status_code == 409 and closed.json()["code"] == "sales_closed"
    hold = await api.client.post("/api/v1/availability/7/reserve", json={"quantity": 1}, headers=api.headers(6))
    assert hold.status_code == 409 and hold.json()["code"] == "sales_closed"
    assert await count(db, "bookings", "status = 'pending'") == 1
    assert (await api.availability(7))["reserved_capacity"] == 4

    assert await events_inbound.handle(runtime, announcement("EventUpdated", 7, status="published")) == "applied"
    assert (await api.book(6, 7, 1)).status_code == 201
    version = (await api.availability(7))["version"]
    again = announcement("EventUpdated", 7, status="published")
    assert await events_inbound.handle(runtime, again) == "duplicate"
    assert (await api.availability(7))["version"] == version

    assert await events_inbound.handle(runtime, announcement("EventDeleted", 7)) == "applied"
    assert (await api.book(8, 7, 1)).json()["code"] == "sales_closed"
    assert await count(db, "bookings") == 2
    for bad in (
        b"not json",
        b'{"type": "EventCreated", "event_id": 9}',
        b'{"type": "Other", "event_id": 1}',
        json.dumps({"type": "EventCreated", "event_id": 9, "event_data": {"capacity": -1}}).encode(),
    ):
        assert await events_inbound.handle(runtime, bad) == "malformed"
    await assert_invariant(db)


async def test_subscriber_applies_messages_from_redis(database_url: str, redis_url: str, redis: Redis) -> None:
    settings = make_settings(database_url, redis_url, background_tasks_enabled=True)
    async with running_app(settings) as api:
        channel = f"{settings.inbound_channel_prefix}:created"
        for _ in range(50):  # wait until subscribed
            if (await redis.pubsub_numsub(channel))[0][1]:
                break
            await asyncio.sleep(0.05)
        await redis.publish(channel, b"garbage first")
        await redis.publish(channel, announcement("EventCreated", 11))
        for _ in range(50):
            response = await api.client.get("/api/v1/availability/11", headers=api.headers(1))
            if response.status_code == 200:
                break
            await asyncio.sleep(0.05)
    assert response.status_code == 200 and response.json()["total_capacity"] == 10


async def test_cache_serves_own_writes_and_never_goes_back(settings: Settings, db: AsyncConnection) -> None:
    async with running_app(settings) as first, running_app(settings) as second:
        await first.create_event(1, capacity=200)
        assert (await first.availability(1))["available_capacity"] == 200
        await first.book(5, 1, 3)
        assert (await first.availability(1))["available_capacity"] == 197  # the writer reads its write
        await asyncio.gather(*((first if i % 2 else second).book(100 + i, 1) for i in range(60)))
        cached = await first.availability(1)
        await db.rollback()
        row = (await db.execute(text("SELECT version, available_capacity FROM event_availability"))).one()
        assert (cached["version"], cached["available_capacity"]) == (row.version, row.available_capacity)
        redis, key = first.runtime.redis.client, first.runtime.redis.key("availability", 1)
        entry = json.loads(await redis.get(key))  # the writers stored their last commit in Redis
        assert (entry["version"], entry["available_capacity"]) == (row.version, row.available_capacity)
        figures = first.runtime.cache
        old = dict(cached, version=cached["version"] - 1, available_capacity=999)
        await figures.store(old, None)
        assert json.loads(await redis.get(key))["available_capacity"] == row.available_capacity  # refused
        assert (await second.availability(1))["available_capacity"] == row.available_capacity
        # A writer that committed earlier but stores late (here: `cached`, now older than a new
        # commit by the other instance) never replaces the newer figure, in Redis or in any read.
        assert (await second.book(6, 1, 2)).status_code == 201
        await figures.store(cached, None)
        await db.rollback()
        newest = (await db.execute(text("SELECT version, available_capacity FROM event_availability"))).one()
        assert newest.version > cached["version"]
        entry = json.loads(await redis.get(key))
        assert (entry["version"], entry["available_capacity"]) == (newest.version, newest.available_capacity)
        for instance in (first, second):
            read = await instance.availability(1)
            assert (read["version"], read["available_capacity"]) == (newest.version, newest.available_capacity)


async def test_cache_stores_many_events_each_against_its_own_version(api: Api) -> None:
    """A batch's events are stored in one script call: each entry is compared with its own."""
    cache, redis = api.runtime.cache, api.runtime.redis.client
    for event_id in (1, 2, 3):
        await api.create_event(event_id, capacity=10)
    cached = {event_id: await api.availability(event_id) for event_id in (1, 2, 3)}
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    newer = [(dict(cached[1], version=cached[1]["version"] + 1, available_capacity=9), later)]
    older = [(dict(cached[2], version=cached[2]["version"] - 1, available_capacity=1), None)]
    await cache.store_many(newer + older + [(dict(cached[3], version=cached[3]["version"] + 2), None)])
    stored = {
        event_id: json.loads(await redis.get(api.runtime.redis.key("availability", event_id))) for event_id in (1, 2, 3)
    }
    assert (stored[1]["available_capacity"], stored[1]["checked_until"]) == (9, later.timestamp())
    assert stored[2]["version"] == cached[2]["version"] and stored[2]["available_capacity"] == 10  # refused
    assert stored[3]["version"] == cached[3]["version"] + 2


async def test_cache_falls_back_to_postgres_with_redis_down(database_url: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with running_app(make_settings(database_url, dead)) as api:
        await api.create_event(1, capacity=5)
        await api.book(5, 1, 2)
        assert (await api.availability(1))["available_capacity"] == 3


async def test_cache_never_serves_a_lapsed_hold(api: Api) -> None:
    await api.create_event(1, capacity=5)
    await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 2}, headers=api.headers(5))
    assert (await api.availability(1))["reserved_capacity"] == 2
    clock.advance(timedelta(minutes=api.settings.reservation_timeout_minutes, seconds=1))
    assert (await api.availability(1))["reserved_capacity"] == 0


async def listeners(api: Api, channel: str) -> int:
    counts = await api.runtime.redis.client.pubsub_numsub(channel)
    return int(counts[0][1])


async def test_sse_stream_sends_figures_and_updates(settings: Settings) -> None:
    async with served_api(settings) as api:
        client, feed = api.client, api.runtime.feed
        assert await listeners(api, feed.channel) == 0  # nobody watches: the instance does not listen
        seen: list[dict[str, Any]] = []
        async with client.stream("GET", "/api/v1/availability/1/stream", headers=api.headers(5)) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if len(seen) == 1:
                        await api.book(5, 1, 2)
                    else:
                        break
        assert seen[0]["available_capacity"] == 5 and seen[1]["available_capacity"] == 3
        for _ in range(50):  # the server notices the client left
            if not feed._clients:
                break
            await asyncio.sleep(0.05)
        assert not feed._clients
        for _ in range(60):  # and stops listening within a second or so
            if await listeners(api, feed.channel) == 0:
                break
            await asyncio.sleep(0.05)
        assert await listeners(api, feed.channel) == 0


class SlowToCloseGateway(RedisGateway):
    """The real gateway, except that closing a subscription waits until the test allows it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.closing = asyncio.Event()
        self.may_close = asyncio.Event()

    @asynccontextmanager
    async def subscription(self, *channels: str) -> AsyncIterator[PubSub]:
        async with super().subscription(*channels) as pubsub:
            try:
                yield pubsub
            finally:
                self.closing.set()
                await self.may_close.wait()


async def test_sse_client_never_trusts_a_failed_subscription_while_it_closes(database_url: str) -> None:
    server = ThrowawayRedis()
    server.start()
    gateway = SlowToCloseGateway(make_settings(database_url, server.url))
    feed = AvailabilityFeed(gateway)
    listening = asyncio.create_task(feed.run())
    try:
        first = await feed.subscribe(1)
        assert (await gateway.client.pubsub_numsub(feed.channel))[0][1] == 1
        await gateway.client.client_kill_filter(_type="pubsub")  # the feed's connection drops
        await gateway.closing.wait()
        arriving = asyncio.create_task(feed.subscribe(2, ready_within=10))
        await asyncio.sleep(0.2)
        assert not arriving.done()  # it waits for a live subscription, not the one being closed
        gateway.may_close.set()
        second = await arriving
        assert (await gateway.client.pubsub_numsub(feed.channel))[0][1] == 1
        # One message carries a whole batch's events; each client gets its own event's figures.
        batch = [{"event_id": 1, "available_capacity": 7}, {"event_id": 2, "available_capacity": 3}]
        await gateway.client.publish(feed.channel, json.dumps(batch))
        assert (await asyncio.wait_for(first.get(), 5))["available_capacity"] == 7
        assert (await asyncio.wait_for(second.get(), 5))["available_capacity"] == 3
        assert first.empty() and second.empty()
        feed.unsubscribe(1, first)
        feed.unsubscribe(2, second)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await gateway.close()
        server.close()
