"""Admin routes: every route here needs `role=admin` (checked at the router)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Path, Query

from app.api.deps import AdminUser, ReadSessionDep, RuntimeDep, SessionDep, require_admin
from app.api.v1 import PREFIX, examples
from app.api.v1.responses import ADMIN, BODY, LOCKED, VALIDATED, WRITE, Answer, problems
from app.core.errors import (
    BookingNotConfirmableError,
    BookingNotRefundableError,
    CapacityBelowHeldError,
    NotFoundError,
    UnstorableValueError,
    WaitlistNotCancellableError,
)
from app.models.enums import BookingStatus, PaymentStatus, WaitlistStatus
from app.schemas.admin import (
    AdminBookingRead,
    AuditEntryRead,
    ConfirmRequest,
    EventOverviewRead,
    RefundRequest,
)
from app.schemas.availability import EventAvailabilityRead, EventAvailabilityUpsert
from app.schemas.booking import BookingRead
from app.schemas.common import MAX_OFFSET, MAX_PAGE_SIZE, IsoDateTime, Page
from app.schemas.waitlist import WaitlistAdminUpdate, WaitlistEntryRead
from app.services import audit, availability, bookings, waitlist
from app.services.audit import Actor, AuditFilter

router = APIRouter(prefix=f"{PREFIX}/admin", tags=["admin"], dependencies=[Depends(require_admin)])
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
OptionalId = Annotated[int | None, Query(ge=1, le=2**63 - 1)]
From = Annotated[IsoDateTime | None, Query(description="At or after this time (ISO 8601)")]
Before = Annotated[IsoDateTime | None, Query(description="Strictly before this time (ISO 8601)")]

# The problems each operation answers, from what app/services/bookings.py, availability.py,
# waitlist.py and audit.py raise.
NOT_FOUND = Answer.of(NotFoundError)
PROBLEMS = {
    "adminListBookings": problems(ADMIN, VALIDATED),
    "adminGetBooking": problems(ADMIN, VALIDATED, NOT_FOUND),
    "confirmBooking": problems(ADMIN, BODY, WRITE, LOCKED, NOT_FOUND, Answer.of(BookingNotConfirmableError)),
    "refundBooking": problems(ADMIN, BODY, WRITE, LOCKED, NOT_FOUND, Answer.of(BookingNotRefundableError)),
    "listEventOverviews": problems(ADMIN, VALIDATED),
    "upsertAvailability": problems(ADMIN, BODY, WRITE, LOCKED, Answer.of(CapacityBelowHeldError)),
    "adminListWaitlist": problems(ADMIN, VALIDATED),
    "updateWaitlistEntry": problems(ADMIN, BODY, WRITE, LOCKED, NOT_FOUND, Answer.of(WaitlistNotCancellableError)),
    # A filter PostgreSQL cannot take (app/api/problems.py database_error).
    "listAuditEntries": problems(ADMIN, VALIDATED, Answer.of(UnstorableValueError)),
}


@router.get(
    "/bookings/",
    response_model=Page[BookingRead],
    operation_id="adminListBookings",
    responses=PROBLEMS["adminListBookings"],
    summary="All bookings, filtered and sorted",
)
async def list_bookings(
    runtime: RuntimeDep,
    limit: Limit = 20,
    offset: Offset = 0,
    status: BookingStatus | None = None,
    payment_status: PaymentStatus | None = None,
    event_id: OptionalId = None,
    user_id: OptionalId = None,
    created_from: From = None,
    created_to: Before = None,
    sort: Literal["-created_at", "created_at", "-total_amount", "total_amount"] = "-created_at",
) -> Page[BookingRead]:
    """Every user's bookings, a page at a time, with filters on status, payment status, event, user
    and creation time (`created_from` inclusive, `created_to` exclusive)."""
    flt = bookings.BookingFilter(user_id, event_id, status, payment_status, created_from, created_to)
    items, total = await bookings.list_bookings(runtime, flt, limit, offset, sort, lag_ok=True)
    return Page(items=[BookingRead.model_validate(b) for b in items], total=total, limit=limit, offset=offset)


@router.get(
    "/bookings/{booking_id}",
    response_model=AdminBookingRead,
    operation_id="adminGetBooking",
    responses=PROBLEMS["adminGetBooking"],
    summary="A booking with its audit history",
)
async def get_booking(booking_id: Id, runtime: RuntimeDep, session: SessionDep) -> AdminBookingRead:
    """Any user's booking, with every audit entry about it, oldest first."""
    booking = await bookings.get_booking(runtime, booking_id)
    history = await audit.history(session, "booking", booking.id)
    return AdminBookingRead.model_validate(
        {
            **BookingRead.model_validate(booking).model_dump(),
            "audit": [AuditEntryRead.model_validate(a) for a in history],
        }
    )


@router.put(
    "/bookings/{booking_id}/confirm",
    response_model=BookingRead,
    operation_id="confirmBooking",
    responses=PROBLEMS["confirmBooking"],
    summary="Confirm a pending booking by hand (payment method `manual`)",
)
async def confirm_booking(
    booking_id: Id,
    runtime: RuntimeDep,
    admin: AdminUser,
    body: Annotated[ConfirmRequest | None, Body(openapi_examples=examples.CONFIRM_BOOKING)] = None,
) -> BookingRead:
    """For a payment taken outside the provider; the optional `note` goes to the audit trail. Not
    pending, or expired: 409 `booking_not_confirmable`."""
    note = body.note if body else None
    return BookingRead.model_validate(await bookings.confirm_booking(runtime, Actor.of(admin), booking_id, note))


@router.put(
    "/bookings/{booking_id}/refund",
    response_model=BookingRead,
    operation_id="refundBooking",
    responses=PROBLEMS["refundBooking"],
    summary="Refund a confirmed booking; its seats return and go to the waitlist first",
)
async def refund_booking(
    booking_id: Id,
    runtime: RuntimeDep,
    admin: AdminUser,
    body: Annotated[RefundRequest | None, Body(openapi_examples=examples.REFUND_BOOKING)] = None,
) -> BookingRead:
    """The optional `reason` goes to the audit trail. Not confirmed: 409 `booking_not_refundable`."""
    reason = body.reason if body else None
    return BookingRead.model_validate(await bookings.refund_booking(runtime, Actor.of(admin), booking_id, reason))


@router.get(
    "/availability/",
    response_model=Page[EventOverviewRead],
    operation_id="listEventOverviews",
    responses=PROBLEMS["listEventOverviews"],
    summary="Every event: capacity, utilization, bookings by status, waitlist length",
)
async def availability_overview(
    runtime: RuntimeDep,
    limit: Limit = 20,
    offset: Offset = 0,
    sort: Literal["-utilization", "utilization", "event_id"] = "event_id",
) -> Page[EventOverviewRead]:
    """A page of events with their figures, their bookings counted by status and their waitlist's
    length; events whose bookings are due to expire are expired first."""
    rows, total = await availability.overview(runtime, limit, offset, sort)
    items = [
        EventOverviewRead.model_validate(
            {
                **EventAvailabilityRead.model_validate(row.event).model_dump(),
                "bookings_by_status": row.bookings_by_status,
                "waitlist_length": row.waitlist_length,
            }
        )
        for row in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.put(
    "/availability/{event_id}",
    response_model=EventAvailabilityRead,
    operation_id="upsertAvailability",
    responses=PROBLEMS["upsertAvailability"],
    summary="Create or change an event's availability; capacity never below seats held",
)
async def upsert_availability(
    event_id: Id,
    body: Annotated[EventAvailabilityUpsert, Body(openapi_examples=examples.UPSERT_AVAILABILITY)],
    runtime: RuntimeDep,
    admin: AdminUser,
) -> EventAvailabilityRead:
    """Creates the event's row (sales open) or changes its name, capacity, price and times. Added
    capacity goes to the waitlist first. Below the seats held or sold: 409 `capacity_below_held`."""
    event = await availability.upsert(runtime, Actor.of(admin), event_id, body)
    return EventAvailabilityRead.model_validate(event)


@router.get(
    "/waitlist/",
    response_model=Page[WaitlistEntryRead],
    operation_id="adminListWaitlist",
    responses=PROBLEMS["adminListWaitlist"],
    summary="All waitlist entries",
)
async def list_waitlist(
    session: ReadSessionDep,
    limit: Limit = 20,
    offset: Offset = 0,
    event_id: OptionalId = None,
    user_id: OptionalId = None,
    status: WaitlistStatus | None = None,
) -> Page[WaitlistEntryRead]:
    """Every user's entries, by event and then in line order, filtered by event, user or status."""
    rows, total = await waitlist.list_entries(
        session, waitlist.WaitlistFilter(user_id, event_id, status), limit, offset
    )
    items = [WaitlistEntryRead.model_validate(e).model_copy(update={"position": p}) for e, p in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.put(
    "/waitlist/{entry_id}",
    response_model=WaitlistEntryRead,
    operation_id="updateWaitlistEntry",
    responses=PROBLEMS["updateWaitlistEntry"],
    summary="Change an entry's priority (lower is served first) or remove it",
)
async def update_waitlist_entry(
    entry_id: Id,
    body: Annotated[WaitlistAdminUpdate, Body(openapi_examples=examples.UPDATE_WAITLIST_ENTRY)],
    runtime: RuntimeDep,
    admin: AdminUser,
) -> WaitlistEntryRead:
    """Give `priority`, or `remove: true` (a live entry only: else 409 `waitlist_not_cancellable`);
    neither: 422 `validation_error`. The optional `reason` goes to the audit trail."""
    entry = await waitlist.admin_update(runtime, Actor.of(admin), entry_id, body)
    return WaitlistEntryRead.model_validate(entry)


@router.get(
    "/audit/",
    response_model=Page[AuditEntryRead],
    operation_id="listAuditEntries",
    responses=PROBLEMS["listAuditEntries"],
    summary="The audit trail, filtered",
)
async def list_audit(
    session: ReadSessionDep,
    limit: Limit = 20,
    offset: Offset = 0,
    entity_type: str | None = Query(None, max_length=32),
    entity_id: OptionalId = None,
    actor_type: str | None = Query(None, max_length=32),
    actor_id: OptionalId = None,
    action: str | None = Query(None, max_length=64),
    since: From = None,
    until: Before = None,
) -> Page[AuditEntryRead]:
    """Audit entries, newest first, filtered by entity, actor, action and time (`since` inclusive,
    `until` exclusive)."""
    flt = AuditFilter(entity_type, entity_id, actor_type, actor_id, action, since, until)
    rows, total = await audit.list_entries(session, flt, limit, offset)
    return Page(items=[AuditEntryRead.model_validate(r) for r in rows], total=total, limit=limit, offset=offset)
