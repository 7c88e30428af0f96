from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, status
from fastapi.responses import StreamingResponse

from app.api.deps import AdmissionToken, CurrentUser, Idempotency, RuntimeDep
from app.api.v1 import PREFIX, examples
from app.api.v1.responses import (
    AUTHENTICATED,
    BODY,
    FAIR_SALE,
    IDEMPOTENT,
    LOCKED,
    TOO_MANY,
    VALIDATED,
    WRITE,
    Answer,
    problems,
    success,
)
from app.core.errors import (
    AmountOutOfRangeError,
    InsufficientCapacityError,
    NotFoundError,
    RateLimitedError,
    ReservationNotActiveError,
    SalesClosedError,
)
from app.schemas.availability import EventAvailabilityRead, ReservationRead, ReserveRequest
from app.services import availability, reservations

router = APIRouter(prefix=f"{PREFIX}/availability", tags=["availability"])
EventId = Annotated[int, Path(ge=1, le=2**63 - 1)]

# The problems each operation answers, from what app/services/availability.py and reservations.py raise.
NOT_FOUND = Answer.of(NotFoundError)
PROBLEMS = {
    "getAvailability": problems(AUTHENTICATED, VALIDATED, NOT_FOUND),
    "reserveSeats": problems(
        AUTHENTICATED,
        BODY,
        WRITE,
        IDEMPOTENT,
        LOCKED,
        TOO_MANY,
        NOT_FOUND,
        FAIR_SALE,
        Answer.of(SalesClosedError),
        Answer.of(InsufficientCapacityError),
        Answer.of(AmountOutOfRangeError),
    ),
    "releaseHold": problems(AUTHENTICATED, VALIDATED, WRITE, LOCKED, NOT_FOUND, Answer.of(ReservationNotActiveError)),
    "streamAvailability": problems(AUTHENTICATED, VALIDATED, NOT_FOUND, Answer.of(RateLimitedError)),
}
SSE_EXAMPLE = (
    "event: availability\nid: 7\ndata: "
    + json.dumps(
        {
            "id": 1,
            "event_id": 1,
            "event_name": "Spring Concert",
            "total_capacity": 4,
            "available_capacity": 2,
            "reserved_capacity": 2,
            "confirmed_capacity": 0,
            "price": "49.90",
            "currency": "USD",
            "sales_open": True,
            "starts_at": "2027-05-01T19:00:00Z",
            "ends_at": "2027-05-01T22:00:00Z",
            "version": 7,
            "last_updated": "2027-04-01T10:00:00Z",
            "is_available": True,
            "utilization_percentage": 50.0,
        }
    )
    + "\n\n: heartbeat\n\n"
)
STREAM = {
    "description": "Server-Sent Events: each `availability` event's `data` is the event's figures "
    "(the `EventAvailabilityRead` schema) as JSON, and its `id` their `version`; lines starting "
    "with `:` are heartbeats. At the token's expiry or revocation an `end` event closes the stream, its "
    '`data` `{"reason": "token_expired"|"token_revoked"}`.',
    "content": {
        "text/event-stream": {
            "schema": {"type": "string", "description": "`event: availability`, `id: <version>`, `data: <JSON>`"},
            "example": SSE_EXAMPLE,
            "x-event-data": {"availability": {"$ref": "#/components/schemas/EventAvailabilityRead"}},
        }
    },
}


@router.get(
    "/{event_id}",
    response_model=EventAvailabilityRead,
    operation_id="getAvailability",
    responses=PROBLEMS["getAvailability"],
    summary="An event's seats: available, reserved (live holds) and confirmed",
)
async def get_availability(event_id: EventId, runtime: RuntimeDep, _user: CurrentUser) -> EventAvailabilityRead:
    """The event's figures now; holds past their expiry never count as reserved."""
    return await availability.get_availability(runtime, event_id)


@router.post(
    "/{event_id}/reserve",
    status_code=status.HTTP_201_CREATED,
    response_model=ReservationRead,
    operation_id="reserveSeats",
    responses={201: success("The hold", replayable=True), **PROBLEMS["reserveSeats"]},
    summary="Hold seats for a while (RESERVATION_TIMEOUT_MINUTES)",
)
async def reserve(
    event_id: EventId,
    body: Annotated[ReserveRequest, Body(openapi_examples=examples.RESERVE)],
    guard: Idempotency,
    admission_token: AdmissionToken = None,
) -> object:
    """Answers the hold's `id` and `expires_at`; book it with `createBooking`'s `reservation_id`
    before then, or its seats return. Past the event's `max_tickets_per_user`: 409
    `ticket_limit_exceeded`; while its waiting room is enabled, send `X-Admission-Token` (403
    `admission_required` without it). Send `Idempotency-Key` to retry safely."""
    return await guard.run(
        lambda claim: reservations.reserve(
            guard.runtime, guard.principal, event_id, body.quantity, claim, admission_token
        )
    )


@router.delete(
    "/{event_id}/release",
    response_model=ReservationRead,
    operation_id="releaseHold",
    responses=PROBLEMS["releaseHold"],
    summary="Release a hold; its seats return (and go to the waitlist first)",
)
async def release(
    event_id: EventId,
    runtime: RuntimeDep,
    user: CurrentUser,
    reservation_id: Annotated[int, Query(ge=1, le=2**63 - 1)],
) -> ReservationRead:
    """Ends one of your live holds (`reservation_id`) early. A hold already used, released or expired:
    409 `reservation_not_active`."""
    return ReservationRead.model_validate(await reservations.release(runtime, user, event_id, reservation_id))


@router.get(
    "/{event_id}/stream",
    response_class=StreamingResponse,
    operation_id="streamAvailability",
    responses={200: STREAM, **PROBLEMS["streamAvailability"]},
    summary="Live availability (Server-Sent Events)",
)
async def stream_availability(event_id: EventId, runtime: RuntimeDep, user: CurrentUser) -> StreamingResponse:
    """The current figures at once, then one `availability` event per committed change, with a
    comment line as heartbeat every SSE_HEARTBEAT_SECONDS. Ends on disconnect or shutdown, and with
    an `end` event (`reason` `token_expired` or `token_revoked`) at the token's expiry or revocation.
    At most SSE_MAX_STREAMS_PER_USER streams per user (across instances) and
    SSE_MAX_STREAMS_PER_INSTANCE per instance: beyond, 429 `rate_limited`."""
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
