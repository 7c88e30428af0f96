"""Live availability streams: capped per user and per instance, ended at the token's expiry or
revocation (issue 12, gap "Live streams")."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.core.security import Principal, Role, create_access_token
from app.db.redis import RedisGateway
from app.runtime import Runtime
from app.services.revocation import RevocationChecker
from app.services.stream_limits import StreamLimits, TooManyStreamsError
from tests.conftest import Api, DenyList, make_settings
from tests.support import served_api

STREAM = "/api/v1/availability/1/stream"
EVENT_WITHIN_SECONDS = 20  # a guard against a stream that never ends, not a measurement
# The deny list is shared with the auth service (no key prefix): users nobody else's test uses.
FIRST_USER = 2 * 10**12 + secrets.randbelow(10**11)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Api, Runtime]]:
    async with served_api(settings) as api:
        yield api, api.runtime


@asynccontextmanager
async def open_stream(api: Api, token: str) -> AsyncIterator[tuple[httpx.Response, AsyncIterator[str]]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with api.client.stream("GET", STREAM, headers=headers) as response:
        yield response, response.aiter_lines()


async def next_event(lines: AsyncIterator[str]) -> tuple[str, dict[str, Any]]:
    """The next event's name and data (comment lines, the heartbeats, are skipped)."""
    name = "message"
    async with asyncio.timeout(EVENT_WITHIN_SECONDS):  # heartbeats would keep a read timeout from firing
        async for line in lines:
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                return name, json.loads(line[6:])
    raise AssertionError("the stream ended without another event")


async def assert_ended(lines: AsyncIterator[str]) -> None:
    assert [line async for line in lines if line] == []


def token(settings: Settings, user_id: int, **options: Any) -> str:
    return create_access_token(settings, user_id, **options)


async def assert_too_many(response: httpx.Response) -> None:
    assert response.status_code == 429
    await response.aread()
    assert response.json()["code"] == "rate_limited" and int(response.headers["Retry-After"]) >= 1


async def test_a_user_beyond_the_stream_cap_is_429(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url, sse_max_streams_per_user=2)
    user, other = FIRST_USER, FIRST_USER + 1
    async with serving(settings) as (api, runtime), AsyncExitStack() as streams:
        for _ in range(2):
            response, lines = await streams.enter_async_context(open_stream(api, token(settings, user)))
            assert response.status_code == 200 and (await next_event(lines))[0] == "availability"
        async with open_stream(api, token(settings, user)) as (refused, _):
            await assert_too_many(refused)
        async with open_stream(api, token(settings, other)) as (response, lines):  # another user's own budget
            assert response.status_code == 200 and (await next_event(lines))[0] == "availability"
        await streams.aclose()  # the user's two streams end ...
        leases = runtime.streams.leases_key(user)
        for _ in range(100):
            if not await runtime.redis.client.zcard(leases):
                break
            await asyncio.sleep(0.05)
        assert await runtime.redis.client.zcard(leases) == 0
        async with open_stream(api, token(settings, user)) as (response, lines):  # ... and a new one may start
            assert response.status_code == 200 and (await next_event(lines))[0] == "availability"


async def test_an_instance_beyond_its_stream_cap_is_429(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url, sse_max_streams_per_instance=2)
    async with serving(settings) as (api, _), AsyncExitStack() as streams:
        for user in (FIRST_USER + 2, FIRST_USER + 3):
            response, _lines = await streams.enter_async_context(open_stream(api, token(settings, user)))
            assert response.status_code == 200
        async with open_stream(api, token(settings, FIRST_USER + 4)) as (refused, _):
            await assert_too_many(refused)


async def test_the_user_cap_counts_the_streams_of_every_instance(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url, sse_max_streams_per_user=2)
    gateway = RedisGateway(settings)
    revocations = RevocationChecker(settings, gateway)
    first, second = StreamLimits(settings, gateway, revocations), StreamLimits(settings, gateway, revocations)
    principal = Principal(user_id=FIRST_USER + 5, role=Role.USER)
    try:
        on_first = [await first.open(principal), await first.open(principal)]
        with pytest.raises(TooManyStreamsError):
            await second.open(principal)
        await on_first[0].close()
        await (await second.open(principal)).close()
    finally:
        await gateway.close()


async def test_the_streams_of_a_dead_instance_stop_counting(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url, sse_max_streams_per_user=1, sse_heartbeat_seconds=0.5)
    gateway = RedisGateway(settings)
    revocations = RevocationChecker(settings, gateway)
    dead, alive = StreamLimits(settings, gateway, revocations), StreamLimits(settings, gateway, revocations)
    principal = Principal(user_id=FIRST_USER + 8, role=Role.USER)
    try:
        await dead.open(principal)  # never renewed nor closed: its instance died
        with pytest.raises(TooManyStreamsError):
            await alive.open(principal)
        await asyncio.sleep(1.6)  # three heartbeats: the lease has lapsed
        await (await alive.open(principal)).close()
    finally:
        await gateway.close()


async def test_a_stream_ends_when_its_token_expires(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url, sse_heartbeat_seconds=30)
    short_lived = token(settings, FIRST_USER + 6, expires_in=timedelta(seconds=4))
    async with serving(settings) as (api, _), open_stream(api, short_lived) as (response, lines):
        assert response.status_code == 200
        assert (await next_event(lines))[0] == "availability"
        assert await next_event(lines) == ("end", {"reason": "token_expired"})
        await assert_ended(lines)


async def test_a_stream_ends_when_its_user_is_revoked(database_url: str, redis_url: str, deny_list: DenyList) -> None:
    settings = make_settings(database_url, redis_url, sse_heartbeat_seconds=0.2)
    user = FIRST_USER + 7
    async with serving(settings) as (api, _), open_stream(api, token(settings, user)) as (response, lines):
        assert response.status_code == 200
        assert (await next_event(lines))[0] == "availability"
        await deny_list.revoke_user(user)
        assert await next_event(lines) == ("end", {"reason": "token_revoked"})
        await assert_ended(lines)
