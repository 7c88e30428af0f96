from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.api.deps import AdmissionToken, CurrentUser, Idempotency, RuntimeDep
from app.api.v1 import PREFIX
from app.api.v1.responses import problems, rendered
from app.models.enums import BookingStatus
from app.schemas.booking import BookingCreate, BookingRead, BookingStatusRead
from app.schemas.common import MAX_OFFSET, MAX_PAGE_SIZE, Page
from app.schemas.payment import PaymentIntent, PaymentStart
from app.services import bookings, payments

router = APIRouter(prefix=f"{PREFIX}/bookings", tags=["bookings"])
BookingId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=BookingRead,
    responses=problems(400, 403, 404, 409, 503),
    summary="Create a pending booking",
    description="Takes seats from the event (or from the caller's `reservation_id` hold). "
    "The booking holds them until `expires_at`. Not enough seats: 409 `insufficient_capacity`. "
    "Send `Idempotency-Key` to retry safely. While the event's waiting room is enabled, a booking that takes "
    "new seats needs `X-Admission-Token` (403 `admission_required` without it); booking your own hold does not.",
)
async def create_booking(body: BookingCreate, guard: Idempotency, admission_token: AdmissionToken = None) -> Response:
    booking = await guard.run(
        lambda claim: bookings.create_booking(guard.runtime, guard.principal, body, claim, admission_token)
    )
    return rendered(booking, status.HTTP_201_CREATED)


@router.get("/", response_model=Page[BookingRead], responses=problems(), summary="List your bookings, newest first")
async def list_bookings(
    runtime: RuntimeDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status_filter: Annotated[BookingStatus | None, Query(alias="status")] = None,
    event_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Page[BookingRead]:
    flt = bookings.BookingFilter(user_id=user.user_id, event_id=event_id, status=status_filter)
    items, total = await bookings.list_bookings(runtime, flt, limit, offset)
    return Page(items=[BookingRead.model_validate(b) for b in items], total=total, limit=limit, offset=offset)


@router.get("/{booking_id}", response_model=BookingRead, responses=problems(404), summary="Get one of your bookings")
async def get_booking(booking_id: BookingId, runtime: RuntimeDep, user: CurrentUser) -> BookingRead:
    return BookingRead.model_validate(await bookings.get_booking(runtime, booking_id, user.user_id))


@router.get(
    "/{booking_id}/status",
    response_model=BookingStatusRead,
    responses=problems(404),
    summary="Status, payment status and expiry of one of your bookings",
)
async def get_booking_status(booking_id: BookingId, runtime: RuntimeDep, user: CurrentUser) -> BookingStatusRead:
    return BookingStatusRead.model_validate(await bookings.get_booking(runtime, booking_id, user.user_id))


@router.put(
    "/{booking_id}/cancel",
    response_model=BookingRead,
    responses=problems(404, 409, 503),
    summary="Cancel a pending or confirmed booking; its seats return (and go to the waitlist first)",
)
async def cancel_booking(booking_id: BookingId, runtime: RuntimeDep, user: CurrentUser) -> BookingRead:
    return BookingRead.model_validate(await bookings.cancel_booking(runtime, user, booking_id))


@router.post(
    "/{booking_id}/payment",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentIntent,
    responses=problems(404, 409, 503),
    summary="Start paying a pending booking",
    description="The payment status goes `pending` (or `failed`) to `processing`; the answer carries the "
    "`payment_reference`, amount and currency for the payment provider, whose webhook then confirms "
    "the booking. Send `Idempotency-Key` to retry safely.",
)
async def start_payment(booking_id: BookingId, body: PaymentStart, guard: Idempotency) -> object:
    return await guard.run(
        lambda claim: payments.start_payment(guard.runtime, guard.principal, booking_id, body.payment_method, claim)
    )
