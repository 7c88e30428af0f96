"""The four state machines' tables (app/services/lifecycles.py), restated here from SPEC section 3
and the README: every transition, its seat move, audit action and message; every other pair
refused with its trigger's code."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.errors import InvalidTransitionError
from app.models.enums import BookingStatus as B
from app.models.enums import PaymentStatus as P
from app.models.enums import ReservationStatus as R
from app.models.enums import WaitlistStatus as W
from app.services.lifecycles import BOOKING, PAYMENT, RESERVATION, WAITLIST
from app.services.state_machine import StateMachine

HOLD, RETURN_HELD, RETURN_SOLD = (-1, 1, 0), (1, -1, 0), (1, 0, -1)
SELL_HELD, SELL_OPEN, STAY = (0, -1, 1), (-1, 0, 1), (0, 0, 0)

# (trigger, source) -> (target, seat move per seat, audit action, message)
EXPECTED: dict[str, dict[tuple[str, Any], tuple[Any, tuple[int, int, int], str | None, str | None]]] = {
    "booking": {
        ("book", None): (B.PENDING, HOLD, "booking.created", "BookingCreated"),
        ("book_held", None): (B.PENDING, STAY, "booking.created", "BookingCreated"),
        ("confirm", B.PENDING): (B.CONFIRMED, SELL_HELD, "booking.confirmed", "BookingConfirmed"),
        ("confirm_late", B.EXPIRED): (B.CONFIRMED, SELL_OPEN, "booking.confirmed_late", "BookingConfirmed"),
        ("cancel", B.PENDING): (B.CANCELLED, RETURN_HELD, "booking.cancelled", "BookingCancelled"),
        ("cancel", B.CONFIRMED): (B.CANCELLED, RETURN_SOLD, "booking.cancelled", "BookingCancelled"),
        ("expire", B.PENDING): (B.EXPIRED, RETURN_HELD, "booking.expired", "BookingExpired"),
        ("refund", B.CONFIRMED): (B.REFUNDED, RETURN_SOLD, "booking.refunded", "BookingRefunded"),
        ("complete", B.CONFIRMED): (B.COMPLETED, STAY, "booking.completed", "BookingCompleted"),
    },
    "payment": {
        ("start", P.PENDING): (P.PROCESSING, STAY, "payment.started", None),
        ("start", P.FAILED): (P.PROCESSING, STAY, "payment.started", None),
        ("fail", P.PROCESSING): (P.FAILED, STAY, "payment.failed", "BookingPaymentFailed"),
        ("complete", P.PENDING): (P.COMPLETED, STAY, None, None),
        ("complete", P.PROCESSING): (P.COMPLETED, STAY, None, None),
        ("complete", P.FAILED): (P.COMPLETED, STAY, None, None),
        ("refund", P.COMPLETED): (P.REFUNDED, STAY, "payment.refund_required", "BookingRefunded"),
        ("refund", P.PROCESSING): (P.REFUNDED, STAY, "payment.refund_required", "BookingRefunded"),
        ("refund", P.FAILED): (P.REFUNDED, STAY, "payment.refund_required", "BookingRefunded"),
        ("refund_with_booking", P.COMPLETED): (P.REFUNDED, STAY, None, None),
    },
    "reservation": {
        ("hold", None): (R.ACTIVE, HOLD, "reservation.created", "AvailabilityChanged"),
        ("convert", R.ACTIVE): (R.CONVERTED, STAY, "reservation.converted", None),
        ("release", R.ACTIVE): (R.RELEASED, RETURN_HELD, "reservation.released", "AvailabilityChanged"),
        ("expire", R.ACTIVE): (R.EXPIRED, RETURN_HELD, "reservation.expired", "AvailabilityChanged"),
    },
    "waitlist": {
        ("join", None): (W.PENDING, STAY, "waitlist.joined", "WaitlistJoined"),
        ("notify", W.PENDING): (W.NOTIFIED, HOLD, "waitlist.notified", "WaitlistNotified"),
        ("book", W.NOTIFIED): (W.BOOKED, STAY, "waitlist.booked", "WaitlistBooked"),
        ("cancel", W.PENDING): (W.CANCELLED, STAY, "waitlist.cancelled", "WaitlistCancelled"),
        ("cancel", W.NOTIFIED): (W.CANCELLED, RETURN_HELD, "waitlist.cancelled", "WaitlistCancelled"),
        ("expire", W.NOTIFIED): (W.EXPIRED, RETURN_HELD, "waitlist.expired", "WaitlistExpired"),
    },
}
CODES = {
    "booking": {
        "confirm": "booking_not_confirmable",
        "confirm_late": "booking_not_confirmable",
        "cancel": "booking_not_cancellable",
        "expire": "booking_not_expirable",
        "refund": "booking_not_refundable",
        "complete": "booking_not_completable",
    },
    "payment": {
        "start": "payment_in_progress",
        "fail": "payment_in_progress",
        "complete": "booking_not_confirmable",
        "refund": "booking_not_refundable",
        "refund_with_booking": "booking_not_refundable",
    },
    "reservation": {
        "convert": "reservation_not_active",
        "release": "reservation_not_active",
        "expire": "reservation_not_active",
    },
    "waitlist": {
        "notify": "waitlist_not_cancellable",
        "book": "offer_not_available",
        "cancel": "waitlist_not_cancellable",
        "expire": "waitlist_not_cancellable",
    },
}
MACHINES: dict[str, tuple[StateMachine[Any, Any], type[Any]]] = {
    "booking": (BOOKING, B),
    "payment": (PAYMENT, P),
    "reservation": (RESERVATION, R),
    "waitlist": (WAITLIST, W),
}


def declared(machine: StateMachine[Any, Any]) -> dict[tuple[str, Any], tuple[Any, tuple[int, int, int], Any, Any]]:
    return {
        key: (t.target, (t.seats.available, t.seats.reserved, t.seats.confirmed), t.action, t.message)
        for key, t in machine.transitions.items()
    }


@pytest.mark.parametrize("name", MACHINES)
def test_the_transitions_are_exactly_the_documented_ones(name: str) -> None:
    assert declared(MACHINES[name][0]) == EXPECTED[name]


@pytest.mark.parametrize("name", MACHINES)
def test_every_seat_move_keeps_the_event_total(name: str) -> None:
    assert all(sum(seats) == 0 for _, seats, _, _ in EXPECTED[name].values())


@pytest.mark.parametrize("name", MACHINES)
def test_every_other_pair_is_refused_with_its_triggers_code(name: str) -> None:
    machine, statuses = MACHINES[name]
    triggers = {trigger for trigger, source in EXPECTED[name] if source is not None}
    for trigger in triggers:
        for status in statuses:
            if (trigger, status) in EXPECTED[name]:
                assert machine.transition(trigger, status).target is EXPECTED[name][(trigger, status)][0]
                continue
            with pytest.raises(InvalidTransitionError) as refused:
                machine.transition(trigger, status)
            assert refused.value.code == CODES[name][trigger]


def test_final_states_have_no_way_out() -> None:
    finals = [
        (BOOKING, (B.CANCELLED, B.REFUNDED, B.COMPLETED)),
        (PAYMENT, (P.REFUNDED,)),
        (RESERVATION, (R.CONVERTED, R.RELEASED, R.EXPIRED)),
        (WAITLIST, (W.BOOKED, W.EXPIRED, W.CANCELLED)),
    ]
    for machine, states in finals:
        assert not [key for key in machine.transitions if key[1] in states]


def test_every_status_that_lapses_can_be_expired() -> None:
    from app.models.booking import Booking
    from app.models.reservation import Reservation
    from app.models.waitlist import WaitlistEntry

    for machine, model in ((BOOKING, Booking), (RESERVATION, Reservation), (WAITLIST, WaitlistEntry)):
        assert machine.find("expire", model.LAPSING_STATUS) is not None
