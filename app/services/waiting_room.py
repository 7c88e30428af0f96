"""The virtual waiting room in front of a hot event: joining, a buyer's ticket, the admin's view
and settings.

Buyers join the event's line (app/services/waiting_line.py, in Redis) and are admitted in the
order they joined, at `admit_per_minute` across all instances together. An admitted buyer gets a
signed admission pass (app/services/admission.py) valid for `admission_minutes` from the moment
the service first tells them; while the room is enabled, new holds, bookings and waitlist entries
of the event need it. The settings live on the event's row in PostgreSQL (audited); the line lives
in Redis only, so run Redis with persistence on (as the compose file does) for a restart of Redis
to keep everyone's place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from app.core.clock import clock
from app.core.errors import NotFoundError
from app.core.security import Principal
from app.models.event_availability import EventAvailability
from app.runtime import Runtime
from app.schemas.waiting_room import WaitingRoomOverview, WaitingRoomSettings, WaitingRoomStatus
from app.services import admission
from app.services.audit import Actor
from app.services.seats import get_event
from app.services.unit_of_work import UnitOfWork
from app.services.waiting_line import Line, at

MAX_POLL_SECONDS = 10


def settings_of(event: EventAvailability) -> WaitingRoomSettings:
    return WaitingRoomSettings(
        enabled=event.waiting_room_enabled,
        admit_per_minute=event.waiting_room_admit_per_minute,
        admission_minutes=event.waiting_room_admission_minutes,
    )


async def room_settings(runtime: Runtime, event_id: int) -> WaitingRoomSettings:
    """The room's settings, read from PostgreSQL at most once a second per instance."""
    room = runtime.waiting_line.recalled(event_id)
    if room is None:
        async with runtime.sessionmaker() as session:
            room = settings_of(await get_event(session, event_id))
        runtime.waiting_line.remember(event_id, room)
    return room


@dataclass(frozen=True, slots=True)
class Joined:
    status: WaitingRoomStatus
    created: bool


async def join(runtime: Runtime, principal: Principal, event_id: int) -> Joined:
    """Take a place in the line, or get the place already taken: rejoining never gives a better one."""
    room = await room_settings(runtime, event_id)
    line = await runtime.waiting_line.look(event_id, room, principal.user_id, join=True)
    return Joined(_status(runtime, principal.user_id, event_id, room, line), line.created)


async def ticket(runtime: Runtime, principal: Principal, event_id: int) -> WaitingRoomStatus:
    room = await room_settings(runtime, event_id)
    line = await runtime.waiting_line.look(event_id, room, principal.user_id, join=False)
    if not line.ticket:
        raise NotFoundError(f"You have not joined the waiting room of event {event_id}")
    return _status(runtime, principal.user_id, event_id, room, line)


def _status(runtime: Runtime, user_id: int, event_id: int, room: WaitingRoomSettings, line: Line) -> WaitingRoomStatus:
    token, expires_at = None, None
    if line.admitted:
        expires_at = at(line.seen_ms)
        assert expires_at is not None  # an admitted ticket has been seen admitted by the script
        expires_at += timedelta(minutes=room.admission_minutes)
        token = admission.issue(runtime.settings, admission.AdmissionPass(user_id, event_id, expires_at))
    position = 0 if line.admitted else line.ticket - line.frontier
    # A room switched off admits nobody and asks nobody for admission: no wait to announce.
    wait = math.ceil(position * 60 / line.rate(room)) if room.enabled else 0
    status: Literal["waiting", "admitted"] = "admitted" if line.admitted else "waiting"
    return WaitingRoomStatus(
        ticket_id=f"WR-{event_id}-{line.ticket}",
        event_id=event_id,
        room_enabled=room.enabled,
        status=status,
        position=position,
        estimated_wait_seconds=wait,
        poll_after_seconds=min(MAX_POLL_SECONDS, max(1, wait // 10)),
        admission_token=token,
        admission_expires_at=expires_at,
        joined_at=at(line.joined_ms),
        admitted_at=at(line.admitted_ms) if line.admitted else None,
    )


async def overview(runtime: Runtime, event_id: int) -> WaitingRoomOverview:
    async with runtime.sessionmaker() as session:
        room = settings_of(await get_event(session, event_id))
    return await _overview(runtime, event_id, room)


async def _overview(runtime: Runtime, event_id: int, room: WaitingRoomSettings) -> WaitingRoomOverview:
    line = await runtime.waiting_line.look(event_id, room, None, join=False)
    oldest = clock.now().timestamp() - line.oldest_joined_ms / 1000 if line.waiting else 0.0
    return WaitingRoomOverview(
        event_id=event_id,
        **room.model_dump(),
        waiting=line.waiting,
        admitted=line.frontier,
        admission_rate_per_minute=round(line.rate(room), 3),
        oldest_wait_seconds=round(max(0.0, oldest), 3),
    )


async def configure(
    runtime: Runtime, principal: Principal, event_id: int, wanted: WaitingRoomSettings
) -> WaitingRoomOverview:
    """Change a room's settings, audited. Buyers already admitted keep their admission."""

    async def operation(uow: UnitOfWork) -> None:
        event = await get_event(uow.session, event_id)
        before = settings_of(event)
        event.waiting_room_enabled = wanted.enabled
        event.waiting_room_admit_per_minute = wanted.admit_per_minute
        event.waiting_room_admission_minutes = wanted.admission_minutes
        actor, was, now_is = Actor.of(principal), before.model_dump(), wanted.model_dump()
        for action in _audit_actions(before, wanted):
            uow.audit(actor, action, "waiting_room", event_id, before=was, after=now_is)

    await runtime.transactions.locked(event_id, operation)
    runtime.waiting_line.remember(event_id, wanted)
    return await _overview(runtime, event_id, wanted)


def _audit_actions(before: WaitingRoomSettings, after: WaitingRoomSettings) -> list[str]:
    actions = []
    if before.enabled != after.enabled:
        actions.append("waiting_room.enabled" if after.enabled else "waiting_room.disabled")
    if (before.admit_per_minute, before.admission_minutes) != (after.admit_per_minute, after.admission_minutes):
        actions.append("waiting_room.rate_changed")
    return actions
