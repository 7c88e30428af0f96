"""The four state machines (SPEC section 3): bookings, their payments, holds and waitlist entries.

Every status change of the service is one of these rows. Seat moves are per seat of the entity's
quantity; "new" rows create the entity (their seats are taken by `take_seats`, version-checked).
Audit rows and messages describe bookings and waitlist entries with the messages' own versioned
schemas (app/schemas/messages.py), holds with their API model (no message carries a hold).
"""

from __future__ import annotations

from typing import Any

from app.core.errors import (
    BookingNotCancellableError,
    BookingNotCompletableError,
    BookingNotConfirmableError,
    BookingNotExpirableError,
    BookingNotRefundableError,
    OfferNotAvailableError,
    PaymentInProgressError,
    ReservationNotActiveError,
    WaitlistNotCancellableError,
)
from app.models.booking import Booking
from app.models.enums import BookingStatus, PaymentStatus, ReservationStatus, WaitlistStatus
from app.models.reservation import Reservation
from app.models.waitlist import WaitlistEntry
from app.schemas.availability import ReservationRead
from app.schemas.messages import BookingDataV1, WaitlistDataV1
from app.services import outbox
from app.services.state_machine import (
    HOLD,
    RETURN_HELD,
    RETURN_SOLD,
    SELL_HELD,
    SELL_OPEN,
    StateMachine,
    Transition,
)
from app.services.unit_of_work import UnitOfWork

B, P, R, W = BookingStatus, PaymentStatus, ReservationStatus, WaitlistStatus


def describe_booking(booking: Booking) -> dict[str, Any]:
    return BookingDataV1.model_validate(booking).model_dump(mode="json")


def describe_entry(entry: WaitlistEntry) -> dict[str, Any]:
    return WaitlistDataV1.model_validate(entry).model_dump(mode="json")


def describe_hold(hold: Reservation) -> dict[str, Any]:
    return ReservationRead.model_validate(hold).model_dump(mode="json") | {"booking_id": hold.booking_id}


def _booking_message(message_type: str, _: Booking, described: dict[str, Any], uow: UnitOfWork) -> dict[str, Any]:
    return outbox.booking_message_of(message_type, described, uow.now)


def _entry_message(message_type: str, _: WaitlistEntry, described: dict[str, Any], uow: UnitOfWork) -> dict[str, Any]:
    return outbox.waitlist_message_of(message_type, described, uow.now)


def _availability_message(_type: str, hold: Reservation, _: dict[str, Any], uow: UnitOfWork) -> dict[str, Any]:
    """A hold's change is announced as its event's new figures."""
    return outbox.availability_message(uow.events[hold.event_id], uow.now)


BOOKING: StateMachine[Booking, BookingStatus] = StateMachine(
    "booking",
    "status",
    [
        Transition("book", None, B.PENDING, "booking.created", "BookingCreated", HOLD),
        # Of seats already held for the buyer (their hold, or a waitlist offer): they change hands.
        Transition("book_held", None, B.PENDING, "booking.created", "BookingCreated"),
        Transition("confirm", B.PENDING, B.CONFIRMED, "booking.confirmed", "BookingConfirmed", SELL_HELD),
        # Paid after it expired, while seats were still open (SPEC section 3).
        Transition("confirm_late", B.EXPIRED, B.CONFIRMED, "booking.confirmed_late", "BookingConfirmed", SELL_OPEN),
        Transition("cancel", B.PENDING, B.CANCELLED, "booking.cancelled", "BookingCancelled", RETURN_HELD),
        Transition("cancel", B.CONFIRMED, B.CANCELLED, "booking.cancelled", "BookingCancelled", RETURN_SOLD),
        Transition("expire", B.PENDING, B.EXPIRED, "booking.expired", "BookingExpired", RETURN_HELD),
        Transition("refund", B.CONFIRMED, B.REFUNDED, "booking.refunded", "BookingRefunded", RETURN_SOLD),
        Transition("complete", B.CONFIRMED, B.COMPLETED, "booking.completed", "BookingCompleted"),
    ],
    {
        "confirm": BookingNotConfirmableError,
        "confirm_late": BookingNotConfirmableError,
        "cancel": BookingNotCancellableError,
        "expire": BookingNotExpirableError,
        "refund": BookingNotRefundableError,
        "complete": BookingNotCompletableError,
    },
    describe_booking,
    _booking_message,
)

# A booking's payment: a second status field of the booking's row.
PAYMENT: StateMachine[Booking, PaymentStatus] = StateMachine(
    "booking",
    "payment_status",
    [
        Transition("start", P.PENDING, P.PROCESSING, "payment.started"),
        Transition("start", P.FAILED, P.PROCESSING, "payment.started"),
        Transition("fail", P.PROCESSING, P.FAILED, "payment.failed", "BookingPaymentFailed"),
        # Moves along with the booking's confirmation, which records both.
        Transition("complete", P.PENDING, P.COMPLETED, None),
        Transition("complete", P.PROCESSING, P.COMPLETED, None),
        Transition("complete", P.FAILED, P.COMPLETED, None),
        # Money to give back: a paid booking cancelled, or paid for one that no longer stands.
        Transition("refund", P.COMPLETED, P.REFUNDED, "payment.refund_required", "BookingRefunded"),
        Transition("refund", P.PROCESSING, P.REFUNDED, "payment.refund_required", "BookingRefunded"),
        Transition("refund", P.FAILED, P.REFUNDED, "payment.refund_required", "BookingRefunded"),
        # Moves along with the booking's refund by an admin, which records both.
        Transition("refund_with_booking", P.COMPLETED, P.REFUNDED, None),
    ],
    {
        "start": PaymentInProgressError,
        "fail": PaymentInProgressError,
        "complete": BookingNotConfirmableError,
        "refund": BookingNotRefundableError,
        "refund_with_booking": BookingNotRefundableError,
    },
    describe_booking,
    _booking_message,
    noun="payment",
)

RESERVATION: StateMachine[Reservation, ReservationStatus] = StateMachine(
    "reservation",
    "status",
    [
        Transition("hold", None, R.ACTIVE, "reservation.created", "AvailabilityChanged", HOLD),
        Transition("convert", R.ACTIVE, R.CONVERTED, "reservation.converted"),
        Transition("release", R.ACTIVE, R.RELEASED, "reservation.released", "AvailabilityChanged", RETURN_HELD),
        Transition("expire", R.ACTIVE, R.EXPIRED, "reservation.expired", "AvailabilityChanged", RETURN_HELD),
    ],
    {"convert": ReservationNotActiveError, "release": ReservationNotActiveError, "expire": ReservationNotActiveError},
    describe_hold,
    _availability_message,
    announces_figures=True,
)

WAITLIST: StateMachine[WaitlistEntry, WaitlistStatus] = StateMachine(
    "waitlist_entry",
    "status",
    [
        Transition("join", None, W.PENDING, "waitlist.joined", "WaitlistJoined"),
        Transition("notify", W.PENDING, W.NOTIFIED, "waitlist.notified", "WaitlistNotified", HOLD),
        Transition("book", W.NOTIFIED, W.BOOKED, "waitlist.booked", "WaitlistBooked"),
        Transition("cancel", W.PENDING, W.CANCELLED, "waitlist.cancelled", "WaitlistCancelled"),
        Transition("cancel", W.NOTIFIED, W.CANCELLED, "waitlist.cancelled", "WaitlistCancelled", RETURN_HELD),
        Transition("expire", W.NOTIFIED, W.EXPIRED, "waitlist.expired", "WaitlistExpired", RETURN_HELD),
    ],
    {
        "notify": WaitlistNotCancellableError,
        "book": OfferNotAvailableError,
        "cancel": WaitlistNotCancellableError,
        "expire": WaitlistNotCancellableError,
    },
    describe_entry,
    _entry_message,
)
