"""Publishes outbox messages after their transaction commits (SPEC section 5).

One relay publishes at a time across all instances (a PostgreSQL advisory lock), in outbox order,
so messages reach the channels and the Stream in the order they were written. Each pass takes a
batch, sends it to Redis in one pipeline (`PUBLISH` on `<prefix>:<kind>` and `XADD` to the Stream
with `MAXLEN ~`), then marks the rows published. A crash between the two repeats the batch:
delivery is at-least-once, and consumers de-duplicate on the message `id`. The relay is woken
right after a commit that wrote messages; a periodic pass is the backstop (other instances'
messages, Redis coming back). Under load, passes are at least `OUTBOX_MIN_INTERVAL_MS` apart.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from datetime import timedelta
from typing import Any

from sqlalchemy import Text, bindparam, cast, delete, func, select, update

from app.core import metrics
from app.core.clock import clock
from app.core.logging import get_logger
from app.db.queries import any_of
from app.db.redis import RedisUnavailable, call_script_replicated
from app.models.outbox import OutboxMessage
from app.runtime import Runtime
from app.services import outbox
from app.services.outbox import KIND_BY_TYPE

log = get_logger(__name__)
RELAY_LOCK_KEY = 0x6576_656E_746C_79  # "evently": one advisory lock for the relay across instances
RETENTION_EVERY_SECONDS = 60.0
# Another instance held the relay lock: it may have read its batch before our commit, so look again
# this soon rather than at the next poll.
LOOK_AGAIN_SECONDS = 0.05
TYPE_BY_KIND = {kind: message_type for message_type, kind in KIND_BY_TYPE.items()}
# A relayed batch marked published by its ids as one array: the statement is the same for every batch.
MARK_PUBLISHED = update(OutboxMessage).where(any_of(OutboxMessage.id, "ids")).values(published_at=bindparam("now"))

# A batch that reached Redis but was not marked published (the relay died, PostgreSQL went away, no
# replica acknowledged it in time) is sent again by the next pass, one relay at a time: its rows are
# still the oldest unpublished ones, so that pass takes them again, after any rows written before
# them that committed since. So the Stream's newest entries, as many as the pass has messages, hold
# what it repeats, and the script skips a message whose id is among them: nothing is kept in Redis
# per message but its Stream entry. (A repeat split over two passes by such late rows, or relays
# with different batch sizes, can still send a message twice: delivery is at-least-once.) A pass
# that skipped something also rewrites the Stream's last id: a write of its own, so that the WAIT
# after it (REDIS_WAIT_REPLICAS) covers the entries it found there too.
# KEYS: the stream. ARGV: its maxlen, then per message its channel, body, id, type and event_id.
PUBLISH_ONCE = """
local maxlen, messages = ARGV[1], (#ARGV - 1) / 5
local sent = {}
for _, entry in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', messages)) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'id' then
      sent[fields[i + 1]] = true
      break
    end
  end
end
local published = 0
for at = 2, #ARGV, 5 do
  local id = ARGV[at + 2]
  if not sent[id] then
    redis.call('PUBLISH', ARGV[at], ARGV[at + 1])
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
               'id', id, 'type', ARGV[at + 3], 'event_id', ARGV[at + 4], 'data', ARGV[at + 1])
    published = published + 1
  end
end
if published < messages then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      redis.call('XSETID', KEYS[1], info[i + 1])
      break
    end
  end
end
return published
"""


class OutboxRelay:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._wake = asyncio.Event()
        self._last_retention = 0.0
        self._stopping = False
        self._look_again_soon = False
        self._publish_once = runtime.redis.client.register_script(PUBLISH_ONCE)

    def stop(self) -> None:
        """No new batch after the one in flight (shutdown)."""
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish waiting messages until none is left; returns how many were published."""
        published = 0
        self._look_again_soon = False
        while not self._stopping:
            batch = await self._publish_batch()
            if batch is None:  # another instance is publishing
                self._look_again_soon = True
                return published
            published += batch
            if batch < self._runtime.settings.outbox_batch_size:
                return published
        return published

    async def _publish_batch(self) -> int | None:
        """Publish one batch; `None` when another instance holds the relay lock."""
        settings = self._runtime.settings
        async with self._runtime.sessionmaker() as session, session.begin():
            if not await session.scalar(select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY))):
                return None
            rows = (
                await session.execute(
                    select(
                        OutboxMessage.id,
                        OutboxMessage.message_id,
                        OutboxMessage.kind,
                        OutboxMessage.event_id,
                        # The stored JSON text as it is: no decoding and re-encoding per message.
                        cast(OutboxMessage.payload, Text).label("body"),
                    )
                    .where(OutboxMessage.published_at.is_(None))
                    .order_by(OutboxMessage.id)
                    .limit(settings.outbox_batch_size)
                )
            ).all()
            if not rows:
                return 0
            await self._runtime.redis.call("outbox_publish", lambda client: self._send(client, rows))
            await session.execute(MARK_PUBLISHED, {"ids": [row.id for row in rows], "now": clock.now()})
        for kind, sent in Counter(row.kind for row in rows).items():
            metrics.OUTBOX_PUBLISHED.labels(TYPE_BY_KIND.get(kind, kind)).inc(sent)
        return len(rows)

    async def _send(self, client: Any, rows: Sequence[Any]) -> None:
        settings = self._runtime.settings
        args: list[str | int] = [settings.events_stream_maxlen]
        for row in rows:
            args += [
                f"{settings.events_channel_prefix}:{row.kind}",
                row.body,
                str(row.message_id),
                TYPE_BY_KIND.get(row.kind, row.kind),
                str(row.event_id),
            ]
        await call_script_replicated(client, self._publish_once, [settings.events_stream], args, settings)

    async def apply_retention(self) -> int:
        """Delete published rows older than OUTBOX_RETENTION_HOURS; unpublished rows always stay."""
        cutoff = clock.now() - timedelta(hours=self._runtime.settings.outbox_retention_hours)
        async with self._runtime.sessionmaker() as session, session.begin():
            result = await session.execute(
                delete(OutboxMessage).where(
                    OutboxMessage.published_at.is_not(None), OutboxMessage.published_at < cutoff
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def report_backlog(self) -> tuple[int, float]:
        async with self._runtime.sessionmaker() as session:
            waiting, age = await outbox.backlog(session, clock.now())
        metrics.OUTBOX_BACKLOG.set(waiting)
        metrics.OUTBOX_OLDEST_AGE.set(age)
        return waiting, age

    async def run(self) -> None:
        """The background loop: publish on wake-up or every OUTBOX_POLL_SECONDS."""
        loop = asyncio.get_running_loop()
        settings = self._runtime.settings
        failures = 0
        last_pass = -math.inf
        while not self._stopping:
            pause = LOOK_AGAIN_SECONDS if self._look_again_soon else settings.outbox_poll_seconds
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=pause)
            # Under load every commit wakes the relay: passes kept OUTBOX_MIN_INTERVAL_MS apart
            # publish many commits' messages each, instead of a pass per commit.
            too_soon = settings.outbox_min_interval_ms / 1000 - (loop.time() - last_pass)
            if too_soon > 0:
                await asyncio.sleep(too_soon)
            self._wake.clear()
            last_pass = loop.time()
            try:
                await self.publish_pending()
                failures = 0
                if loop.time() - self._last_retention > RETENTION_EVERY_SECONDS:
                    self._last_retention = loop.time()
                    await self.apply_retention()
                    await self.report_backlog()
            except asyncio.CancelledError:
                raise
            except RedisUnavailable:
                failures += 1
                metrics.OUTBOX_ERRORS.inc()
                await self.report_backlog()
                log.warning("outbox_relay_redis_unavailable", failures=failures)
                await asyncio.sleep(min(5.0, 0.2 * 2**failures))
            except Exception:
                failures += 1
                metrics.OUTBOX_ERRORS.inc()
                log.exception("outbox_relay_failed")
                await asyncio.sleep(min(5.0, 0.2 * 2**failures))
