"""The per-buyer ticket limit of an event (`max_tickets_per_user`), decided by PostgreSQL.

A buyer's seats for an event are the quantities of their live holds, pending, confirmed and
completed bookings and live waitlist offers: counted from those rows themselves, so every way seats
leave (cancel, expiry, refund, release, an offer declined) frees the allowance with nothing to keep
in step. Turning a hold or an offer into a booking moves the same seats and is not counted twice.

The count is read inside the transaction that takes the seats, and that transaction commits only
if no other change of the event's seats committed in between: every taking of seats either holds
the event's row locked for the whole transaction or ends in a version-checked capacity `UPDATE`
that fails (and is retried, counting again) when the row moved on. So a buyer's simultaneous
requests, on any number of instances, with or without the Redis lock, are decided one after the
other by PostgreSQL. The limit is checked on requests that take new seats (holds, bookings of new
seats, waitlist joins); a lower limit set later touches nobody's seats, only their next requests.
Events without a limit pay nothing.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import TicketLimitExceededError
from app.models.booking import Booking
from app.models.enums import BookingStatus
from app.models.event_availability import EventAvailability
from app.models.reservation import Reservation
from app.models.waitlist import WaitlistEntry

Buyer = tuple[int, int]  # (event_id, user_id)


def _live_seats(buyers: Collection[Buyer]) -> Select[int, int, int]:
    def of(
        model: type[Booking] | type[Reservation] | type[WaitlistEntry], live: ColumnElement[bool]
    ) -> Select[int, int, int]:
        return select(model.event_id, model.user_id, model.quantity).where(
            tuple_(model.event_id, model.user_id).in_(list(buyers)), live
        )

    def held(model: type[Booking] | type[Reservation] | type[WaitlistEntry]) -> ColumnElement[bool]:
        """In its lapsing status and not lapsed (app/models/lapsing.py)."""
        return and_(model.status == model.LAPSING_STATUS, ~model.lapsed)

    seats = union_all(
        of(Reservation, held(Reservation)),
        of(Booking, or_(held(Booking), Booking.status.in_((BookingStatus.CONFIRMED, BookingStatus.COMPLETED)))),
        of(WaitlistEntry, held(WaitlistEntry)),
    ).subquery()
    return select(seats.c.event_id, seats.c.user_id, func.sum(seats.c.quantity)).group_by(
        seats.c.event_id, seats.c.user_id
    )


async def seats_of(session: AsyncSession, buyers: Collection[Buyer]) -> dict[Buyer, int]:
    """Each buyer's live seats for the event, in one query."""
    if not buyers:
        return {}
    counted = await session.execute(_live_seats(set(buyers)))
    held = dict.fromkeys(buyers, 0)
    held.update({(event_id, user_id): int(total) for event_id, user_id, total in counted})
    return held


class Allowance:
    """What each buyer of a batch may still take, kept up to date as seats are handed out."""

    def __init__(self, held: dict[Buyer, int]) -> None:
        self._held = held

    def refusal(self, event: EventAvailability, user_id: int, quantity: int) -> TicketLimitExceededError | None:
        limit = event.max_tickets_per_user
        if limit is None:
            return None
        held = self._held.get((event.event_id, user_id), 0)
        if held + quantity > limit:
            return TicketLimitExceededError(limit, held)
        self._held[(event.event_id, user_id)] = held + quantity
        return None


async def allowance_for(
    session: AsyncSession, events: Collection[EventAvailability], buyers: Collection[Buyer]
) -> Allowance:
    """The allowance of `buyers` for those of `events` that have a limit (no query when none has)."""
    limited = {event.event_id for event in events if event.max_tickets_per_user is not None}
    return Allowance(await seats_of(session, [buyer for buyer in buyers if buyer[0] in limited]))


async def check(session: AsyncSession, event: EventAvailability, user_id: int, quantity: int) -> None:
    """Refuse `quantity` more seats for this buyer past the event's limit."""
    allowance = await allowance_for(session, [event], [(event.event_id, user_id)])
    refusal = allowance.refusal(event, user_id, quantity)
    if refusal is not None:
        raise refusal
