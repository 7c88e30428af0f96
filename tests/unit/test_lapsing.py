"""When a row has lapsed (app/models/lapsing.py): the rule on a loaded row, and the SQL it makes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql

from app.core.clock import clock
from app.models.booking import Booking
from app.models.enums import BookingStatus, ReservationStatus, WaitlistStatus
from app.models.reservation import Reservation
from app.models.waitlist import WaitlistEntry

SECOND = timedelta(seconds=1)
CASES = [
    (Booking, BookingStatus.PENDING, BookingStatus.CONFIRMED),
    (Reservation, ReservationStatus.ACTIVE, ReservationStatus.CONVERTED),
    (WaitlistEntry, WaitlistStatus.NOTIFIED, WaitlistStatus.BOOKED),
]


@pytest.mark.parametrize(("model", "lapsing", "other"), CASES)
def test_a_row_lapses_in_its_lapsing_status_once_its_time_has_passed(
    model: type, lapsing: object, other: object
) -> None:
    now = clock.now()
    assert model(status=lapsing, expires_at=now - SECOND).lapsed
    assert not model(status=lapsing, expires_at=now + timedelta(minutes=1)).lapsed
    assert not model(status=other, expires_at=now - SECOND).lapsed  # another status never lapses
    assert not model(status=lapsing, expires_at=None).lapsed


@pytest.mark.parametrize(("model", "lapsing", "other"), CASES)
def test_the_sql_is_the_same_rule(model: type, lapsing: object, other: object) -> None:
    query = select(model.id).where(model.lapsed).compile(dialect=postgresql.dialect())
    table = model.__tablename__
    assert f"{table}.status = %(status_1)s AND {table}.expires_at <= %(expires_at_1)s" in str(query)
    assert query.params["status_1"] is lapsing
    assert abs(query.params["expires_at_1"] - clock.now()) < timedelta(seconds=5)


def test_the_models_properties_follow_it() -> None:
    past = clock.now() - SECOND
    lapsed = Booking(status=BookingStatus.PENDING, expires_at=past)
    assert lapsed.is_expired and not lapsed.is_active
    offer = WaitlistEntry(status=WaitlistStatus.NOTIFIED, expires_at=past)
    assert offer.is_notification_expired and not offer.is_active
    assert not Reservation(status=ReservationStatus.ACTIVE, expires_at=past).is_live
