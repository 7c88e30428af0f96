"""Write-through cache of event availability in Redis, and the live feed of its changes.

After every committed capacity change the writer stores the new figures (so it reads its own
write) with a compare-and-set on `version`: an older figure never replaces a newer one, whatever
order two instances finish in. Entries carry `checked_until`, the earliest expiry of any live
hold when they were written: past it the cache is bypassed, PostgreSQL expires what is due, and
the entry is rewritten, so a lapsed hold is never served as live. Booking decisions never read
the cache; they are made by the conditional UPDATE in PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from app.core import metrics
from app.core.logging import get_logger
from app.db.redis import RedisGateway, RedisUnavailable, queue_script_per_slot

log = get_logger(__name__)
NEVER = 253402300799.0  # 9999-12-31: no live hold to wait for

# KEYS: the entries; ARGV[1]: ttl, ARGV[2]: reset flag, then for each entry in turn: its figures
# JSON, version and hold expiry (epoch s, or -1). An answer per entry: 1 if stored.
STORE_IF_NEWER = """
local function store(key, figures, version, checked_until)
  if checked_until < 0 then checked_until = nil end
  local current = redis.call('GET', key)
  if current then
    local old = cjson.decode(current)
    if old['version'] > version or (old['version'] == version and ARGV[2] ~= '1') then return 0 end
    if ARGV[2] ~= '1' and old['checked_until'] and (checked_until == nil or old['checked_until'] < checked_until) then
      checked_until = old['checked_until']
    end
  end
  local entry = cjson.decode(figures)
  entry['checked_until'] = checked_until or 0
  redis.call('SET', key, cjson.encode(entry), 'EX', tonumber(ARGV[1]))
  return 1
end
local stored = {}
for i, key in ipairs(KEYS) do
  local at = 3 * i
  stored[i] = store(key, ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]))
end
return stored
"""


class AvailabilityCache:
    def __init__(self, gateway: RedisGateway, ttl_seconds: int) -> None:
        self._gateway = gateway
        self._ttl = ttl_seconds

    def _key(self, event_id: int) -> str:
        return self._gateway.key("availability", event_id)

    async def store(
        self, figures: dict[str, Any], hold_expiry: datetime | float | None, *, reset: bool = False
    ) -> None:
        """Store figures unless a newer version is cached. `reset` replaces `checked_until`."""
        await self.store_many([(figures, hold_expiry)], reset=reset)

    async def store_many(
        self, entries: list[tuple[dict[str, Any], datetime | float | None]], *, reset: bool = False
    ) -> None:
        """Store several events' figures in one round trip (a batch may touch many events)."""

        async def send(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            await self.queue_stores(pipe, entries, reset=reset)
            await pipe.execute()

        try:
            await self._gateway.call("cache_store", send)
        except RedisUnavailable:
            log.info("availability_cache_write_skipped", events=len(entries))

    async def queue_stores(
        self, pipe: Any, entries: list[tuple[dict[str, Any], datetime | float | None]], *, reset: bool = False
    ) -> None:
        """Add the compare-and-set stores of `entries` to a pipeline the caller sends (one script
        call for them all, one per slot on a Cluster)."""
        keys = [self._key(figures["event_id"]) for figures, _ in entries]
        args = [(orjson.dumps(figures), figures["version"], _expiry_arg(expiry)) for figures, expiry in entries]
        queue_script_per_slot(pipe, STORE_IF_NEWER, keys, args, shared=[self._ttl, int(reset)])

    async def load(self, event_id: int, now: datetime) -> dict[str, Any] | None:
        """Cached figures still valid at `now`, or None (miss, lapsed check, or Redis down)."""
        try:
            raw = await self._gateway.call("cache_load", lambda client: client.get(self._key(event_id)))
        except RedisUnavailable:
            metrics.CACHE_LOOKUPS.labels("unavailable").inc()
            return None
        if raw is None:
            metrics.CACHE_LOOKUPS.labels("miss").inc()
            return None
        entry: dict[str, Any] = orjson.loads(raw)
        if entry.get("checked_until", 0) <= now.timestamp():
            metrics.CACHE_LOOKUPS.labels("stale").inc()
            return None
        metrics.CACHE_LOOKUPS.labels("hit").inc()
        entry.pop("checked_until", None)
        return entry


def _expiry_arg(hold_expiry: datetime | float | None) -> float:
    """A hold expiry as the script takes it: epoch seconds, or -1 for none."""
    if hold_expiry is None:
        return -1
    return hold_expiry.timestamp() if isinstance(hold_expiry, datetime) else hold_expiry
