"""The waiting room: buyers join an event's line and are admitted in turn; admins switch it on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status
from fastapi.responses import StreamingResponse

from app.api.deps import AdminUser, CurrentUser, RuntimeDep, require_admin
from app.api.v1 import PREFIX
from app.api.v1.responses import problems, rendered
from app.core.errors import AppError
from app.schemas.waiting_room import WaitingRoomOverview, WaitingRoomSettings, WaitingRoomStatus
from app.services import waiting_room

router = APIRouter(prefix=f"{PREFIX}/queue", tags=["waiting room"])
admin_router = APIRouter(
    prefix=f"{PREFIX}/admin/queue", tags=["admin"], dependencies=[Depends(require_admin)], responses=problems(403)
)
EventId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post(
    "/{event_id}/join",
    status_code=status.HTTP_201_CREATED,
    response_model=WaitingRoomStatus,
    responses={
        200: {"model": WaitingRoomStatus, "description": "Already in the line: the same ticket"},
        **problems(404, 503),
    },
    summary="Join an event's waiting room",
    description="201 with a new ticket, or 200 with the ticket you already hold: rejoining never gives a "
    "second or better place. Once `status` is `admitted`, send `admission_token` as `X-Admission-Token` "
    "to hold, book or join the waitlist. With Redis unreachable: 503 with `Retry-After`.",
)
async def join(event_id: EventId, runtime: RuntimeDep, user: CurrentUser) -> Response:
    joined = await waiting_room.join(runtime, user, event_id)
    return rendered(joined.status, status.HTTP_201_CREATED if joined.created else status.HTTP_200_OK)


@router.get(
    "/{event_id}",
    response_model=WaitingRoomStatus,
    responses=problems(404, 503),
    summary="Your ticket in an event's waiting room",
    description="Poll it every `poll_after_seconds`, or use the stream.",
)
async def get_ticket(event_id: EventId, runtime: RuntimeDep, user: CurrentUser) -> WaitingRoomStatus:
    return await waiting_room.ticket(runtime, user, event_id)


@router.get(
    "/{event_id}/stream",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "`position` events, then `admitted`"},
        **problems(404, 503),
    },
    summary="Your place in the line, live (Server-Sent Events)",
    description="A `position` event (the ticket as `GET /queue/{event_id}` answers it) whenever it is read "
    "again, then one `admitted` event carrying the admission token, and the stream ends.",
)
async def stream_ticket(event_id: EventId, runtime: RuntimeDep, user: CurrentUser) -> StreamingResponse:
    first = await waiting_room.ticket(runtime, user, event_id)  # not joined: 404 before the stream starts

    async def events() -> AsyncIterator[str]:
        current: WaitingRoomStatus | None = first
        while True:
            if current is None:
                yield ": the waiting room cannot be reached right now; retrying\n\n"
            elif current.status == "admitted":
                yield _message("admitted", current)
                return
            else:
                yield _message("position", current)
            await asyncio.sleep(current.poll_after_seconds if current else 5)
            try:
                current = await waiting_room.ticket(runtime, user, event_id)
            except AppError:
                current = None

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def _message(kind: str, ticket: WaitingRoomStatus) -> str:
    return f"event: {kind}\ndata: {ticket.model_dump_json()}\n\n"


@admin_router.put(
    "/{event_id}",
    response_model=WaitingRoomOverview,
    responses=problems(404, 503),
    summary="Switch an event's waiting room on or off, or change its admission rate",
    description="Audited (`waiting_room.enabled`, `waiting_room.disabled`, `waiting_room.rate_changed`). "
    "Turning it off lets everyone buy at once; buyers already admitted keep their admission either way.",
)
async def configure(
    event_id: EventId, body: WaitingRoomSettings, runtime: RuntimeDep, admin: AdminUser
) -> WaitingRoomOverview:
    return await waiting_room.configure(runtime, admin, event_id, body)


@admin_router.get(
    "/{event_id}",
    response_model=WaitingRoomOverview,
    responses=problems(404, 503),
    summary="An event's waiting room: settings, buyers waiting and admitted, rate, oldest wait",
)
async def overview(event_id: EventId, runtime: RuntimeDep) -> WaitingRoomOverview:
    return await waiting_room.overview(runtime, event_id)
