"""REDIS_WAIT_REPLICAS: the relay counts a batch as sent only once that many replicas have it."""

from __future__ import annotations

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.services.outbox_relay import OutboxRelay
from tests.checks import count
from tests.conftest import make_settings, running_app


async def test_a_batch_no_replica_has_stays_unpublished(database_url: str, redis_url: str, db: AsyncConnection) -> None:
    """The machine's Redis has no replica: WAIT 1 answers 0, and the rows wait for the next pass."""
    async with running_app(make_settings(database_url, redis_url, redis_wait_replicas=1)) as api:
        await api.create_event(1, 5)
        assert (await api.book(2, 1)).status_code == 201
        relay: OutboxRelay = api.client._transport.app.state.relay  # type: ignore[attr-defined]
        with pytest.raises(RedisTimeoutError):
            await relay.publish_pending()
    assert await count(db, "outbox", "published_at IS NULL") == await count(db, "outbox") > 0
