"""The batcher's allocation of an event's seats to the requests of one batch (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from app.core.errors import AdmissionRequiredError, InsufficientCapacityError, TicketLimitExceededError
from app.models.event_availability import EventAvailability
from app.services.admission import AdmissionPass
from app.services.audit import Actor
from app.services.booking_batcher import BookingRequest, _allocate
from app.services.buyer_limit import Allowance

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def event(available: int, **extra: object) -> EventAvailability:
    values: dict[str, object] = {
        "event_id": 1,
        "event_name": "Gig",
        "total_capacity": 100,
        "available_capacity": available,
        "price": Decimal("10.00"),
        "sales_open": True,
        "waiting_room_enabled": False,
        "max_tickets_per_user": None,
        **extra,
    }
    return EventAvailability(**values)


def requests(*quantities: int) -> list[BookingRequest]:
    return [BookingRequest(Actor.system(), 100 + i, 1, quantity) for i, quantity in enumerate(quantities)]


def granted(errors: list[object]) -> list[bool]:
    return [error is None for error in errors]


async def test_seats_go_in_arrival_order_until_none_is_left() -> None:
    errors = _allocate(event(5), 1, requests(2, 2, 2), Allowance({}), NOW)
    assert granted(errors) == [True, True, False]
    assert isinstance(errors[2], InsufficientCapacityError)


async def test_smaller_requests_behind_a_refused_one_still_get_the_seats_left() -> None:
    errors = _allocate(event(5), 1, requests(3, 4, 1, 1, 1), Allowance({}), NOW)
    assert granted(errors) == [True, False, True, True, False]


async def test_an_unknown_or_closed_event_refuses_every_request() -> None:
    assert not any(granted(_allocate(None, 1, requests(1, 1), Allowance({}), NOW)))
    assert not any(granted(_allocate(event(5, sales_open=False), 1, requests(1), Allowance({}), NOW)))


async def test_the_per_buyer_limit_counts_what_the_batch_already_gave() -> None:
    batch = [BookingRequest(Actor.system(), 7, 1, 2), BookingRequest(Actor.system(), 7, 1, 2)]
    errors = _allocate(event(10, max_tickets_per_user=3), 1, batch, Allowance({(1, 7): 0}), NOW)
    assert granted(errors) == [True, False]
    assert isinstance(errors[1], TicketLimitExceededError)


async def test_behind_a_waiting_room_only_a_live_pass_of_the_buyer_admits() -> None:
    live = AdmissionPass(100, 1, NOW + timedelta(minutes=5))
    batch = requests(1, 1, 1)
    batch[0].admission = live
    batch[1].admission = AdmissionPass(999, 1, NOW + timedelta(minutes=5))  # someone else's
    batch[2].admission = AdmissionPass(102, 1, NOW)  # ended
    errors = _allocate(event(5, waiting_room_enabled=True), 1, batch, Allowance({}), NOW)
    assert granted(errors) == [True, False, False]
    assert all(isinstance(error, AdmissionRequiredError) for error in errors[1:])
