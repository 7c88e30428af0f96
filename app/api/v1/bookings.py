from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response, status

from app.api.deps import AdmissionToken, CurrentUser, Idempotency, RuntimeDep, get_idempotency
from app.api.direct_route import DirectRoute
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
    AmountOutOfRangeError,
    BookingNotCancellableError,
    BookingNotPayableError,
    InsufficientCapacityError,
    NotFoundError,
    PaymentInProgressError,
    ReservationNotActiveError,
    SalesClosedError,
    UnstorableValueError,
)
from app.core.security import Principal
from app.models.enums import BookingStatus
from app.schemas.booking import BookingCreate, BookingRead, BookingStatusRead
from app.schemas.common import MAX_OFFSET, MAX_PAGE_SIZE, Page
from app.schemas.payment import PaymentIntent, PaymentStart
from app.services import bookings, payments

router = APIRouter(prefix=f"{PREFIX}/bookings", tags=["bookings"])
BookingId = Annotated[int, Path(ge=1, le=2**63 - 1)]

# The problems each operation answers, from what app/services/bookings.py and payments.py raise.
NOT_FOUND = Answer.of(NotFoundError)
PROBLEMS = {
    "createBooking": problems(
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
        Answer.of(ReservationNotActiveError),  # the reservation has expired or was used
        Answer.of(AmountOutOfRangeError),
        Answer.of(UnstorableValueError),
    ),
    "listBookings": problems(AUTHENTICATED, VALIDATED),
    "getBooking": problems(AUTHENTICATED, VALIDATED, NOT_FOUND),
    "getBookingStatus": problems(AUTHENTICATED, VALIDATED, NOT_FOUND),
    "cancelBooking": problems(
        AUTHENTICATED, VALIDATED, WRITE, LOCKED, NOT_FOUND, Answer.of(BookingNotCancellableError)
    ),
    "startPayment": problems(
        AUTHENTICATED,
        BODY,
        WRITE,
        IDEMPOTENT,
        LOCKED,
        NOT_FOUND,
        Answer.of(BookingNotPayableError),
        Answer.of(PaymentInProgressError),
    ),
}


async def create_booking(
    body: Annotated[BookingCreate, Body(openapi_examples=examples.CREATE_BOOKING)],
    guard: Idempotency,
    admission_token: AdmissionToken = None,
) -> Response:
    """Takes seats from the event, or from your hold `reservation_id` (then `quantity` must equal the
    hold's). The booking keeps them until `expires_at` (BOOKING_TIMEOUT_MINUTES); pay it with
    `startPayment`, or it expires and the seats return. Not enough seats: 409 `insufficient_capacity`
    with `available`; past the event's `max_tickets_per_user`: 409 `ticket_limit_exceeded`. While the
    event's waiting room is enabled, booking new seats needs `X-Admission-Token` (403
    `admission_required` without it); booking your own hold does not. Send `Idempotency-Key` to retry
    safely."""
    booking = await guard.run(
        lambda claim: bookings.create_booking(guard.runtime, guard.principal, body, claim, admission_token)
    )
    return located(rendered(booking, status.HTTP_201_CREATED), router.prefix)


class CreateBookingRoute(DirectRoute):
    """createBooking without FastAPI's dependency solving: the rush's hot path (docs/scaling.md)."""

    @staticmethod
    async def call(request: Request, principal: Principal, values: Mapping[str, Any]) -> Response:
        guard = await get_idempotency(request, principal, values["idempotency_key"])
        return await create_booking(values["body"], guard, values["admission_token"])


router.add_api_route(
    "/",
    create_booking,
    methods=["POST"],
    route_class_override=CreateBookingRoute,
    status_code=status.HTTP_201_CREATED,
    response_model=BookingRead,
    operation_id="createBooking",
    responses={201: success("The booking, pending", replayable=True, located=True), **PROBLEMS["createBooking"]},
    summary="Create a pending booking",
)


@router.get(
    "/",
    response_model=Page[BookingRead],
    operation_id="listBookings",
    responses=PROBLEMS["listBookings"],
    summary="List your bookings, newest first",
)
async def list_bookings(
    runtime: RuntimeDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status_filter: Annotated[BookingStatus | None, Query(alias="status")] = None,
    event_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Page[BookingRead]:
    """Your bookings, newest first, a page at a time; filter by `status` or `event_id`."""
    flt = bookings.BookingFilter(user_id=user.user_id, event_id=event_id, status=status_filter)
    items, total = await bookings.list_bookings(runtime, flt, limit, offset)
    return Page(items=[BookingRead.model_validate(b) for b in items], total=total, limit=limit, offset=offset)


@router.get(
    "/{booking_id}",
    response_model=BookingRead,
    operation_id="getBooking",
    responses=PROBLEMS["getBooking"],
    summary="Get one of your bookings",
)
async def get_booking(booking_id: BookingId, runtime: RuntimeDep, user: CurrentUser) -> BookingRead:
    """One of your bookings; a pending one past `expires_at` is expired first. Another user's: 404."""
    return BookingRead.model_validate(await bookings.get_booking(runtime, booking_id, user.user_id))


@router.get(
    "/{booking_id}/status",
    response_model=BookingStatusRead,
    operation_id="getBookingStatus",
    responses=PROBLEMS["getBookingStatus"],
    summary="Status, payment status and expiry of one of your bookings",
)
async def get_booking_status(booking_id: BookingId, runtime: RuntimeDep, user: CurrentUser) -> BookingStatusRead:
    """The short form of `getBooking`, for polling while a payment completes."""
    return BookingStatusRead.model_validate(await bookings.get_booking(runtime, booking_id, user.user_id))


@router.put(
    "/{booking_id}/cancel",
    response_model=BookingRead,
    operation_id="cancelBooking",
    responses=PROBLEMS["cancelBooking"],
    summary="Cancel a pending or confirmed booking; its seats return (and go to the waitlist first)",
)
async def cancel_booking(booking_id: BookingId, runtime: RuntimeDep, user: CurrentUser) -> BookingRead:
    """Cancels one of your bookings. Its seats go to the waitlist's first entries that fit, then back
    on sale. Any other status (or an expired booking): 409 `booking_not_cancellable`."""
    return BookingRead.model_validate(await bookings.cancel_booking(runtime, user, booking_id))


@router.post(
    "/{booking_id}/payment",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentIntent,
    operation_id="startPayment",
    responses={201: success("What to hand to the payment provider", replayable=True), **PROBLEMS["startPayment"]},
    summary="Start paying a pending booking",
)
async def start_payment(
    booking_id: BookingId,
    body: Annotated[PaymentStart, Body(openapi_examples=examples.START_PAYMENT)],
    guard: Idempotency,
) -> object:
    """The payment status goes `pending` (or `failed`) to `processing`; the answer carries the
    `payment_reference`, amount and currency for the payment provider, whose webhook
    (`receivePaymentWebhook`) then confirms the booking. Send `Idempotency-Key` to retry safely."""
    return await guard.run(
        lambda claim: payments.start_payment(guard.runtime, guard.principal, booking_id, body.payment_method, claim)
    )
