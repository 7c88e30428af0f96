"""The waiting line's answer (Line.parse) and the admission pass (app/services/admission.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.core.config import Settings
from app.core.errors import AdmissionRequiredError
from app.models.event_availability import EventAvailability
from app.schemas.waiting_room import WaitingRoomSettings
from app.services import admission
from app.services.admission import AdmissionPass
from app.services.waiting_line import Line

NOW = datetime(2030, 1, 1, tzinfo=UTC)
ROOM = WaitingRoomSettings(enabled=True, admit_per_minute=600)


def settings(secret: str = "unit-secret-" + "s" * 40) -> Settings:
    return Settings(_env_file=None, database_url="postgresql://u@h/d", redis_url="redis://h/0", jwt_secret=secret)  # type: ignore[call-arg]


def line(ticket: int, frontier: int, measured: bytes = b"0") -> Line:
    # As the script answers: integers, the measured rate as a string (Lua numbers lose their fraction).
    return Line.parse([10, frontier, 2, measured, 1_000, ticket, 1, 0, 1_000, 0, 2_000])


def test_a_line_answer_is_read_field_by_field() -> None:
    answer = Line.parse([10, 4, 2, b"123.5", 1_000, 3, 1, 0, 1_500, 1_600, 2_000])
    assert answer == Line(10, 4, 2, 123.5, 1_000, 3, True, False, 1_500, 1_600, 2_000)
    assert answer.waiting == 6


def test_a_ticket_is_admitted_up_to_the_frontier_and_no_ticket_never_is() -> None:
    assert line(ticket=4, frontier=4).admitted
    assert not line(ticket=5, frontier=4).admitted
    assert not line(ticket=0, frontier=4).admitted


def test_the_rate_is_the_measured_one_once_there_is_one() -> None:
    assert line(1, 1).rate(ROOM) == 600.0
    assert line(1, 1, measured=b"42.5").rate(ROOM) == 42.5


def test_a_pass_read_back_is_the_pass_issued() -> None:
    issued = AdmissionPass(7, 1, NOW + timedelta(minutes=10))
    assert admission.read(settings(), admission.issue(settings(), issued)) == issued


@pytest.mark.parametrize("token", [None, "", "not-a-token", "a.b.c"])
def test_no_pass_from_an_absent_or_malformed_token(token: str | None) -> None:
    assert admission.read(settings(), token) is None


def test_a_pass_signed_with_another_secret_is_no_pass() -> None:
    token = admission.issue(settings("another-secret-" + "o" * 40), AdmissionPass(7, 1, NOW))
    assert admission.read(settings(), token) is None


def test_a_pass_admits_its_buyer_for_its_event_until_it_ends() -> None:
    ends = NOW + timedelta(minutes=10)
    admitted = AdmissionPass(7, 1, ends)
    assert admitted.admits(7, 1, NOW)
    assert not admitted.admits(8, 1, NOW)
    assert not admitted.admits(7, 2, NOW)
    assert not admitted.admits(7, 1, ends)


def test_only_an_event_behind_a_waiting_room_asks_for_a_pass() -> None:
    open_event = EventAvailability(event_id=1, price=Decimal("1"), waiting_room_enabled=False)
    room_event = EventAvailability(event_id=1, price=Decimal("1"), waiting_room_enabled=True)
    assert admission.refusal(open_event, 7, None, NOW) is None
    assert isinstance(admission.refusal(room_event, 7, None, NOW), AdmissionRequiredError)
    assert admission.refusal(room_event, 7, AdmissionPass(7, 1, NOW + timedelta(seconds=1)), NOW) is None
