from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response, status

from app.api.deps import AdmissionToken, CurrentUser, Idempotency, RuntimeDep, SessionDep
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
    located,
    problems,
    rendered,
    success,
)
from app.core.errors import (
    AlreadyWaitlistedError,
    AmountOutOfRangeError,
    NotFoundError,
    OfferNotAvailableError,
    SalesClosedError,
    SeatsAvailableError,
    WaitlistNotCancellableError,
)
from app.schemas.booking import BookingRead
from app.schemas.common import MAX_OFFSET, MAX_PAGE_SIZE, Page
from app.schemas.waitlist import WaitlistEntryRead, WaitlistJoin
from app.services import waitlist
from app.services.audit import Actor

router = APIRouter(prefix=f"{PREFIX}/waitlist", tags=["waitlist"])
EntryId = Annotated[int, Path(ge=1, le=2**63 - 1)]
BOOKINGS = f"{PREFIX}/bookings"  # where a booked offer's booking is found

# The problems each operation answers, from what app/services/waitlist.py raises.
NOT_FOUND = Answer.of(NotFoundError)
PROBLEMS = {
    "joinWaitlist": problems(
        AUTHENTICATED,
        BODY,
        WRITE,
        IDEMPOTENT,
        LOCKED,
        TOO_MANY,
        NOT_FOUND,
        FAIR_SALE,
        Answer.of(SalesClosedError),
        Answer.of(SeatsAvailableError),
        Answer.of(AlreadyWaitlistedError),
        Answer.of(AmountOutOfRangeError),
    ),
    "listWaitlistEntries": problems(AUTHENTICATED, VALIDATED),
    "leaveWaitlist": problems(
        AUTHENTICATED, VALIDATED, WRITE, LOCKED, NOT_FOUND, Answer.of(WaitlistNotCancellableError)
    ),
    "bookWaitlistOffer": problems(
        AUTHENTICATED,
        VALIDATED,
        WRITE,
        IDEMPOTENT,
        LOCKED,
        NOT_FOUND,
        Answer.of(OfferNotAvailableError),
        Answer.of(AmountOutOfRangeError),
    ),
}


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=WaitlistEntryRead,
    operation_id="joinWaitlist",
    responses={201: success("The entry, with its `position`", replayable=True), **PROBLEMS["joinWaitlist"]},
    summary="Join an event's waitlist (only when not enough seats are open)",
)
async def join(
    body: Annotated[WaitlistJoin, Body(openapi_examples=examples.JOIN_WAITLIST)],
    guard: Idempotency,
    admission_token: AdmissionToken = None,
) -> object:
    """When seats free up they are offered to the first entries that fit (status `notified`, until
    `expires_at`); book them with `bookWaitlistOffer`. Enough seats open: 409 `seats_available`;
    past the event's `max_tickets_per_user`: 409 `ticket_limit_exceeded`; while its waiting room is
    enabled, send `X-Admission-Token` (403 `admission_required` without it). Send `Idempotency-Key`
    to retry safely."""
    return await guard.run(lambda claim: waitlist.join(guard.runtime, guard.principal, body, claim, admission_token))


@router.get(
    "/",
    response_model=Page[WaitlistEntryRead],
    operation_id="listWaitlistEntries",
    responses=PROBLEMS["listWaitlistEntries"],
    summary="List your waitlist entries",
)
async def list_entries(
    session: SessionDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Page[WaitlistEntryRead]:
    """Your entries, each pending one with its `position` in line."""
    rows, total = await waitlist.list_entries(session, waitlist.WaitlistFilter(user_id=user.user_id), limit, offset)
    items = [WaitlistEntryRead.model_validate(e).model_copy(update={"position": p}) for e, p in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.put(
    "/{entry_id}/cancel",
    response_model=WaitlistEntryRead,
    operation_id="leaveWaitlist",
    responses=PROBLEMS["leaveWaitlist"],
    summary="Leave the line, or decline an offer (its seats go to the next in line)",
)
async def cancel(entry_id: EntryId, runtime: RuntimeDep, user: CurrentUser) -> WaitlistEntryRead:
    """Cancels one of your pending or notified entries. Any other status: 409 `waitlist_not_cancellable`."""
    entry = await waitlist.cancel(runtime, Actor.of(user), entry_id, user.user_id)
    return WaitlistEntryRead.model_validate(entry)


@router.post(
    "/{entry_id}/book",
    status_code=status.HTTP_201_CREATED,
    response_model=BookingRead,
    operation_id="bookWaitlistOffer",
    responses={201: success("The booking, pending", replayable=True, located=True), **PROBLEMS["bookWaitlistOffer"]},
    summary="Book the seats offered to you; a pending booking, paid like any other",
)
async def book(entry_id: EntryId, guard: Idempotency) -> Response:
    """Turns your entry's live offer (status `notified`) into a pending booking of the offered seats.
    No offer, or it lapsed: 409 `offer_not_available`. Send `Idempotency-Key` to retry safely."""
    booking = await guard.run(lambda claim: waitlist.book_offer(guard.runtime, guard.principal, entry_id, claim))
    result = booking if isinstance(booking, Response) else BookingRead.model_validate(booking)
    return located(rendered(result, status.HTTP_201_CREATED), BOOKINGS)
