from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from app.api.deps import AdmissionToken, CurrentUser, Idempotency, RuntimeDep, SessionDep
from app.api.v1 import PREFIX
from app.api.v1.responses import problems
from app.schemas.booking import BookingRead
from app.schemas.common import MAX_OFFSET, MAX_PAGE_SIZE, Page
from app.schemas.waitlist import WaitlistEntryRead, WaitlistJoin
from app.services import waitlist
from app.services.audit import Actor

router = APIRouter(prefix=f"{PREFIX}/waitlist", tags=["waitlist"])
EntryId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=WaitlistEntryRead,
    responses=problems(400, 403, 404, 409, 503),
    summary="Join an event's waitlist (only when not enough seats are open)",
    description="While the event's waiting room is enabled, send `X-Admission-Token` "
    "(403 `admission_required` without it).",
)
async def join(body: WaitlistJoin, guard: Idempotency, admission_token: AdmissionToken = None) -> object:
    return await guard.run(
        lambda claim: waitlist.join(guard.runtime, guard.principal, body, claim, admission_token)
    )


@router.get("/", response_model=Page[WaitlistEntryRead], responses=problems(), summary="List your waitlist entries")
async def list_entries(
    session: SessionDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Page[WaitlistEntryRead]:
    rows, total = await waitlist.list_entries(session, waitlist.WaitlistFilter(user_id=user.user_id), limit, offset)
    items = [WaitlistEntryRead.model_validate(e).model_copy(update={"position": p}) for e, p in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.put(
    "/{entry_id}/cancel",
    response_model=WaitlistEntryRead,
    responses=problems(404, 409, 503),
    summary="Leave the line, or decline an offer (its seats go to the next in line)",
)
async def cancel(entry_id: EntryId, runtime: RuntimeDep, user: CurrentUser) -> WaitlistEntryRead:
    entry = await waitlist.cancel(runtime, Actor.of(user), entry_id, user.user_id)
    return WaitlistEntryRead.model_validate(entry)


@router.post(
    "/{entry_id}/book",
    status_code=status.HTTP_201_CREATED,
    response_model=BookingRead,
    responses=problems(404, 409, 503),
    summary="Book the seats offered to you; a pending booking, paid like any other",
)
async def book(entry_id: EntryId, guard: Idempotency) -> object:
    return await guard.run(lambda claim: waitlist.book_offer(guard.runtime, guard.principal, entry_id, claim))
