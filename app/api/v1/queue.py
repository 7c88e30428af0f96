"""The waiting room: buyers join an event's line and are admitted in turn; admins switch it on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Response, status
from fastapi.responses import StreamingResponse

from app.api.deps import AdminUser, CurrentUser, RuntimeDep, require_admin
from app.api.v1 import PREFIX, examples
from app.api.v1.availability import sse_end
from app.api.v1.responses import ADMIN, AUTHENTICATED, BODY, LOCKED, VALIDATED, WRITE, Answer, problems, rendered
from app.core.errors import NotFoundError, RateLimitedError, ServiceUnavailableError
from app.runtime import Runtime
from app.schemas.waiting_room import WaitingRoomOverview, WaitingRoomSettings, WaitingRoomStatus
from app.services import waiting_room
from app.services.stream_limits import StreamSession

router = APIRouter(prefix=f"{PREFIX}/queue", tags=["waiting room"])
admin_router = APIRouter(prefix=f"{PREFIX}/admin/queue", tags=["admin"], dependencies=[Depends(require_admin)])
EventId = Annotated[int, Path(ge=1, le=2**63 - 1)]

# The problems each operation answers, from what app/services/waiting_room.py raises. Redis out of
# reach is the 503 `service_unavailable` (with Retry-After) every authenticated route declares.
NOT_FOUND = Answer.of(NotFoundError)
PROBLEMS = {
    "joinWaitingRoom": problems(AUTHENTICATED, VALIDATED, WRITE, NOT_FOUND),
    "getWaitingRoomTicket": problems(AUTHENTICATED, VALIDATED, NOT_FOUND),
    "streamWaitingRoomTicket": problems(AUTHENTICATED, VALIDATED, NOT_FOUND, Answer.of(RateLimitedError)),
    "configureWaitingRoom": problems(ADMIN, BODY, WRITE, LOCKED, NOT_FOUND),
    "getWaitingRoom": problems(ADMIN, VALIDATED, NOT_FOUND),
}
STREAM = {
    "description": "Server-Sent Events: `position` events (`data`: your ticket, the `WaitingRoomStatus` "
    "schema, as JSON) each time the line is read again, then one `admitted` event carrying the admission "
    'token, and the stream ends; or an `end` event (`{"reason": "token_expired"|"token_revoked"}`) at '
    "the token's expiry or revocation. Lines starting with `:` say the waiting room cannot be reached for now.",
    "content": {
        "text/event-stream": {
            "schema": {"type": "string", "description": "`event: position|admitted`, `data: <JSON>`"},
            "x-event-data": {
                "position": {"$ref": "#/components/schemas/WaitingRoomStatus"},
                "admitted": {"$ref": "#/components/schemas/WaitingRoomStatus"},
            },
        }
    },
}


@router.post(
    "/{event_id}/join",
    status_code=status.HTTP_201_CREATED,
    response_model=WaitingRoomStatus,
    operation_id="joinWaitingRoom",
    responses={
        201: {"description": "A new ticket"},
        200: {"model": WaitingRoomStatus, "description": "You were in the line already: the same ticket"},
        **PROBLEMS["joinWaitingRoom"],
    },
    summary="Join an event's waiting room",
)
async def join(event_id: EventId, runtime: RuntimeDep, user: CurrentUser) -> Response:
    """Takes your place in the event's line: 201 with a new ticket, or 200 with the ticket you hold
    already (rejoining never gives a second or better place). Once `status` is `admitted`, send
    `admission_token` as `X-Admission-Token` to hold seats, book or join the waitlist. Redis out of
    reach: 503 with `Retry-After`, and places already taken are kept."""
    joined = await waiting_room.join(runtime, user, event_id)
    return rendered(joined.status, status.HTTP_201_CREATED if joined.created else status.HTTP_200_OK)


@router.get(
    "/{event_id}",
    response_model=WaitingRoomStatus,
    operation_id="getWaitingRoomTicket",
    responses=PROBLEMS["getWaitingRoomTicket"],
    summary="Your ticket in an event's waiting room",
)
async def get_ticket(event_id: EventId, runtime: RuntimeDep, user: CurrentUser) -> WaitingRoomStatus:
    """Your place and the estimated wait; ask again after `poll_after_seconds`, or use the stream.
    Not in the line: 404."""
    return await waiting_room.ticket(runtime, user, event_id)


@router.get(
    "/{event_id}/stream",
    operation_id="streamWaitingRoomTicket",
    response_class=StreamingResponse,
    responses={200: STREAM, **PROBLEMS["streamWaitingRoomTicket"]},
    summary="Your place in the line, live (Server-Sent Events)",
)
async def stream_ticket(event_id: EventId, runtime: RuntimeDep, user: CurrentUser) -> StreamingResponse:
    """Your ticket as a `position` event each time the line is read, then one `admitted` event with
    the admission token, and the stream ends; also with an `end` event (`reason` `token_expired` or
    `token_revoked`) at the token's expiry or revocation, and at shutdown. It counts against
    SSE_MAX_STREAMS_PER_USER and SSE_MAX_STREAMS_PER_INSTANCE like the availability stream. Not in
    the line: 404 before the stream starts."""
    first = await waiting_room.ticket(runtime, user, event_id)
    session = await runtime.streams.open(user)
    return StreamingResponse(
        _ticket_events(runtime, session, event_id, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _ticket_events(
    runtime: Runtime, session: StreamSession, event_id: int, first: WaitingRoomStatus
) -> AsyncIterator[str]:
    current: WaitingRoomStatus | None = first
    try:
        while await session.live():
            if current is None:
                yield ": the waiting room cannot be reached right now; retrying\n\n"
            elif current.status == "admitted":
                yield _message("admitted", current)
                return
            else:
                yield _message("position", current)
            pause = current.poll_after_seconds if current else waiting_room.MAX_POLL_SECONDS
            with suppress(TimeoutError):
                await asyncio.wait_for(runtime.feed.shutting_down.wait(), timeout=session.wait_at_most(pause))
            if runtime.feed.shutting_down.is_set():
                return
            try:
                current = await waiting_room.ticket(runtime, session.principal, event_id)
            except ServiceUnavailableError:  # Redis out of reach for now: say so and look again
                current = None
        yield sse_end(session.end_reason)
    finally:
        await session.close()


def _message(kind: str, ticket: WaitingRoomStatus) -> str:
    return f"event: {kind}\ndata: {ticket.model_dump_json()}\n\n"


@admin_router.put(
    "/{event_id}",
    response_model=WaitingRoomOverview,
    operation_id="configureWaitingRoom",
    responses=PROBLEMS["configureWaitingRoom"],
    summary="Switch an event's waiting room on or off, or change its admission rate",
)
async def configure(
    event_id: EventId,
    body: Annotated[WaitingRoomSettings, Body(openapi_examples=examples.CONFIGURE_WAITING_ROOM)],
    runtime: RuntimeDep,
    admin: AdminUser,
) -> WaitingRoomOverview:
    """While enabled, new holds, bookings and waitlist entries of the event need an admission from
    its line, given at `admit_per_minute` across all instances. Turning it off lets everyone buy at
    once; buyers already admitted keep their admission either way. Audited
    (`waiting_room.enabled`, `waiting_room.disabled`, `waiting_room.rate_changed`)."""
    return await waiting_room.configure(runtime, admin, event_id, body)


@admin_router.get(
    "/{event_id}",
    response_model=WaitingRoomOverview,
    operation_id="getWaitingRoom",
    responses=PROBLEMS["getWaitingRoom"],
    summary="An event's waiting room: settings, buyers waiting and admitted, rate, oldest wait",
)
async def overview(event_id: EventId, runtime: RuntimeDep) -> WaitingRoomOverview:
    """The room's settings, how many wait and how many were admitted, the measured admission rate
    and how long the first buyer still waiting has waited."""
    return await waiting_room.overview(runtime, event_id)
