"""The waiting room's line, kept in Redis by one Lua script (see app/services/waiting_room.py).

The line is a ticket counter and an admission frontier: the n-th buyer to join holds ticket n,
and every ticket at or below the frontier is admitted. Each call of the script first moves the
frontier by the admissions earned since the last call (`admit_per_minute` times the time passed),
so admission needs no timer anywhere, runs at one rate across all instances together, and its
order is the join order by construction. A line with nobody waiting banks at most one admission
(a new line starts with it): the first buyer into an empty line passes at once, and a crowd
arriving after a quiet spell is still metered. While the room is disabled nobody is admitted (nobody
needs to be: everyone may buy), so a place taken then is a place in the line, not an admission that
would outlast the room being switched on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from app.core import metrics
from app.core.errors import ServiceUnavailableError
from app.db.redis import RedisGateway, RedisUnavailable
from app.schemas.waiting_room import WaitingRoomSettings

SETTINGS_CACHE_SECONDS = 1.0  # how long an instance acts on a room's settings before reading them again
LINE_TTL_SECONDS = 7 * 24 * 3600  # a line nobody joined for a week is forgotten
RETRY_AFTER_SECONDS = "5"
LINE_PARTS = ("state", "users", "joined", "admitted", "seen")

# KEYS: state, users (user -> ticket), joined (ticket -> ms), admitted (ticket -> ms), seen (user -> ms)
# ARGV: user id ("" for none), admit_per_minute, enabled (1/0), join (1/0), the keys' TTL in seconds
# Returns: issued, frontier, newly admitted, measured rate a minute, the first waiting ticket's join ms,
#          the user's ticket (0: none), created (1/0), first seen admitted (1/0), its joined, admitted
#          and first-seen-admitted ms
LINE_SCRIPT = """
local state, users, joined, admitted_at, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local user, rate, enabled, join = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function num(field, default)
  local value = redis.call('HGET', state, field)
  if value then return tonumber(value) end
  return default
end

local newly = 0
local function advance()
  local issued, frontier = num('issued', 0), num('admitted', 0)
  local credit = num('credit', 1) + math.max(0, now - num('last_ms', now)) * rate / 60000
  local target = frontier
  if enabled then target = math.min(issued, frontier + math.floor(credit)) end
  credit = credit - (target - frontier)
  if target == issued or not enabled then credit = math.min(math.max(credit, 0), 1) end
  for ticket = frontier + 1, target do redis.call('HSET', admitted_at, ticket, now) end
  newly = newly + target - frontier
  local measured_ms = num('measured_ms', -1)
  if measured_ms < 0 then
    redis.call('HSET', state, 'measured_ms', now, 'measured_admitted', target)
  elseif now - measured_ms >= 10000 then
    local measured = (target - num('measured_admitted', frontier)) * 60000 / (now - measured_ms)
    redis.call('HSET', state, 'measured', tostring(measured), 'measured_ms', now, 'measured_admitted', target)
  end
  redis.call('HSET', state, 'admitted', target, 'last_ms', now, 'credit', tostring(credit))
  return issued, target
end

local issued, frontier = advance()
local ticket = redis.call('HGET', users, user)
local created = 0
if not ticket and join and user ~= '' then
  ticket = redis.call('HINCRBY', state, 'issued', 1)
  redis.call('HSET', users, user, ticket)
  redis.call('HSET', joined, ticket, now)
  created = 1
  issued, frontier = advance()
end
ticket = tonumber(ticket or 0)
local first, seen_ms = 0, 0
if ticket > 0 and ticket <= frontier then
  first = redis.call('HSETNX', seen, user, now)
  seen_ms = tonumber(redis.call('HGET', seen, user))
end
if created == 1 then
  for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, tonumber(ARGV[5])) end
end
return {issued, frontier, newly, redis.call('HGET', state, 'measured') or '0',
        tonumber(redis.call('HGET', joined, frontier + 1) or 0), ticket, created, first,
        tonumber(redis.call('HGET', joined, ticket) or 0), tonumber(redis.call('HGET', admitted_at, ticket) or 0),
        seen_ms}
"""


@dataclass(frozen=True, slots=True)
class Line:
    """One answer of the line script: the line as a whole, and the caller's ticket in it."""

    issued: int
    frontier: int
    newly_admitted: int
    measured_per_minute: float
    oldest_joined_ms: int
    ticket: int
    created: bool
    first_seen_admitted: bool
    joined_ms: int
    admitted_ms: int
    seen_ms: int

    @classmethod
    def parse(cls, raw: list[Any]) -> Line:
        issued, frontier, newly, measured, oldest, ticket, created, first, joined, admitted, seen = raw
        return cls(
            int(issued), int(frontier), int(newly), float(measured), int(oldest),
            int(ticket), bool(created), bool(first), int(joined), int(admitted), int(seen),
        )  # fmt: skip

    @property
    def waiting(self) -> int:
        return self.issued - self.frontier

    @property
    def admitted(self) -> bool:
        return 0 < self.ticket <= self.frontier

    def rate(self, room: WaitingRoomSettings) -> float:
        """Admissions a minute as measured over the last window, or as set until one is measured."""
        return self.measured_per_minute if self.measured_per_minute > 0 else float(room.admit_per_minute)


def at(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


class WaitingLine:
    """Every event's line, and this instance's short memory of the rooms' settings."""

    def __init__(self, gateway: RedisGateway) -> None:
        self._gateway = gateway
        self._script = gateway.client.register_script(LINE_SCRIPT)
        self._settings: dict[int, tuple[WaitingRoomSettings, float]] = {}

    def recalled(self, event_id: int) -> WaitingRoomSettings | None:
        cached = self._settings.get(event_id)
        return cached[0] if cached is not None and cached[1] > time.monotonic() else None

    def remember(self, event_id: int, room: WaitingRoomSettings) -> None:
        self._settings[event_id] = (room, time.monotonic() + SETTINGS_CACHE_SECONDS)

    def keys(self, event_id: int) -> list[str]:
        # One hash tag per event: the script's keys share a Redis Cluster slot.
        return [self._gateway.key("waiting_room", f"{{{event_id}}}", part) for part in LINE_PARTS]

    async def look(self, event_id: int, room: WaitingRoomSettings, user_id: int | None, *, join: bool) -> Line:
        """Move the line on, optionally join it, and read it (with `user_id`'s ticket)."""
        args = [user_id or "", room.admit_per_minute, int(room.enabled), int(join), LINE_TTL_SECONDS]

        async def run(client: Redis) -> list[Any]:
            result: list[Any] = await self._script(keys=self.keys(event_id), args=args, client=client)
            return result

        try:
            line = Line.parse(await self._gateway.call("waiting_room", run))
        except RedisUnavailable:
            raise ServiceUnavailableError(
                "The waiting room cannot be reached right now; places already taken are kept",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            ) from None
        _count(event_id, room, line)
        return line


def _count(event_id: int, room: WaitingRoomSettings, line: Line) -> None:
    label = str(event_id)
    metrics.WAITING_ROOM_WAITING.labels(label).set(line.waiting)
    metrics.WAITING_ROOM_ADMISSION_RATE.labels(label).set(line.rate(room))
    if line.newly_admitted:
        metrics.WAITING_ROOM_ADMITTED.labels(label).inc(line.newly_admitted)
    if line.first_seen_admitted:
        metrics.WAITING_ROOM_WAIT.observe(max(0, line.admitted_ms - line.joined_ms) / 1000)
