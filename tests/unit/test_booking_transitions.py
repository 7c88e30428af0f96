"""The booking state machine's table (app/services/bookings.py): every pair, allowed or refused."""

from __future__ import annotations

from itertools import product

from app.models.enums import BookingStatus as S
from app.services.bookings import REFUSALS, TRANSITIONS

# (from, to): (available, reserved, confirmed) seat moves per seat of the booking, the message.
ALLOWED = {
    (S.PENDING, S.CONFIRMED): ((0, -1, 1), "BookingConfirmed"),
    (S.PENDING, S.CANCELLED): ((1, -1, 0), "BookingCancelled"),
    (S.PENDING, S.EXPIRED): ((1, -1, 0), "BookingExpired"),
    (S.CONFIRMED, S.CANCELLED): ((1, 0, -1), "BookingCancelled"),
    (S.CONFIRMED, S.REFUNDED): ((1, 0, -1), "BookingRefunded"),
    (S.CONFIRMED, S.COMPLETED): ((0, 0, 0), "BookingCompleted"),
}


def test_the_allowed_transitions_are_exactly_the_documented_ones() -> None:
    assert TRANSITIONS == ALLOWED


def test_every_seat_move_keeps_the_event_total() -> None:
    for moves, _message in TRANSITIONS.values():
        assert sum(moves) == 0


def test_every_refused_pair_has_its_targets_code() -> None:
    refused = [pair for pair in product(S, S) if pair not in TRANSITIONS]
    assert len(refused) == len(S) ** 2 - len(ALLOWED)
    targets = {target for _, target in refused} - {S.PENDING}  # nothing moves to pending: never asked for
    codes = {target: REFUSALS[target].code for target in targets}
    assert codes == {
        S.CONFIRMED: "booking_not_confirmable",
        S.CANCELLED: "booking_not_cancellable",
        S.EXPIRED: "booking_not_expirable",
        S.REFUNDED: "booking_not_refundable",
        S.COMPLETED: "booking_not_completable",
    }


def test_final_states_have_no_way_out() -> None:
    for final in (S.CANCELLED, S.EXPIRED, S.REFUNDED, S.COMPLETED):
        assert not [pair for pair in TRANSITIONS if pair[0] is final]
