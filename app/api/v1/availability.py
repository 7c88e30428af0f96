from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from fastapi.responses import StreamingResponse

from app.api.deps import CurrentUser, Idempotency, RuntimeDep
from app.api.v1 import PREFIX
from app.api.v1.responses import problems
from app.schemas.availability import EventAvailabilityRead, ReservationRead, ReserveRequest
from app.services import availability, reservations

router = APIRouter(prefix=f"{PREFIX}/availability", tags=["availability"])
EventId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get(
    "/{event_id}",
    response_model=EventAvailabilityRead,
    responses=problems(404),
    summary="An event's seats: available, reserved (live holds) and confirmed",
)
async def get_availability(event_id: EventId, runtime: RuntimeDep, _user: CurrentUser) -> EventAvailabilityRead:
    return await availability.get_availability(runtime, event_id)


@router.post(
    "/{event_id}/reserve",
    status_code=status.HTTP_201_CREATED,
    response_model=ReservationRead,
    responses=problems(400, 404, 409, 503),
    summary="Hold seats for a while (RESERVATION_TIMEOUT_MINUTES)",
    description="Answers the hold's `id` and `expires_at`; book it with `reservation_id`. "
    "Send `Idempotency-Key` to retry safely.",
)
async def reserve(event_id: EventId, body: ReserveRequest, guard: Idempotency) -> object:
    return await guard.run(
        lambda claim: reservations.reserve(guard.runtime, guard.principal, event_id, body.quantity, claim)
    )


@router.delete(
    "/{event_id}/release",
    response_model=ReservationRead,
    responses=problems(404, 409, 503),
    summary="Release a hold; its seats return (and go to the waitlist first)",
)
async def release(
    event_id: EventId,
    runtime: RuntimeDep,
    user: CurrentUser,
    reservation_id: Annotated[int, Query(ge=1, le=2**63 - 1)],
) -> ReservationRead:
    return ReservationRead.model_validate(await reservations.release(runtime, user, event_id, reservation_id))


@router.get(
    "/{event_id}/stream",
    responses={200: {"content": {"text/event-stream": {}}, "description": "`availability` events"}, **problems(404)},
    summary="Live availability (Server-Sent Events)",
    description="The current figures at once, then one `availability` event per committed change, "
    "with a comment line as heartbeat every SSE_HEARTBEAT_SECONDS. Ends on disconnect or shutdown, and "
    "with an `end` event (`reason` `token_expired` or `token_revoked`) at the token's expiry or revocation. "
    "At most SSE_MAX_STREAMS_PER_USER streams per user and SSE_MAX_STREAMS_PER_INSTANCE per instance (429).",
)
async def stream_availability(event_id: EventId, runtime: RuntimeDep, user: CurrentUser) -> StreamingResponse:
    session = await runtime.streams.open(user)
    try:
        # Listening first, reading second: a change committed in between arrives as an update.
        updates = await runtime.feed.subscribe(event_id)
    except BaseException:
        await session.close()
        raise
    try:
        current = await availability.get_availability(runtime, event_id)
    except BaseException:  # not found, or the client went away: no stream, no subscription left
        runtime.feed.unsubscribe(event_id, updates)
        await session.close()
        raise
    heartbeat = runtime.settings.sse_heartbeat_seconds

    async def events() -> AsyncIterator[str]:
        try:
            last_version = current.version
            yield sse_message(current.model_dump(mode="json"))
            while await session.live():
                try:
                    figures = await asyncio.wait_for(updates.get(), timeout=session.wait_at_most(heartbeat))
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                if figures is None:  # the instance is shutting down
                    return
                if figures["version"] > last_version:
                    last_version = figures["version"]
                    yield sse_message(figures)
            yield sse_end(session.end_reason)
        finally:
            runtime.feed.unsubscribe(event_id, updates)
            await session.close()

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def sse_message(figures: dict[str, Any]) -> str:
    return f"event: availability\nid: {figures['version']}\ndata: {json.dumps(figures)}\n\n"


def sse_end(reason: str | None) -> str:
    return f"event: end\ndata: {json.dumps({'reason': reason})}\n\n"
