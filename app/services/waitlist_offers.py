"""Offering freed seats to the waitlist (SPEC section 3), inside the transaction that frees them.

Pending entries are walked in priority order, then join time. Each entry whose quantity fits in
the free seats is offered them: its seats move available -> reserved and it becomes `notified`
until its offer expires. An entry that does not fit is skipped, so a large request never blocks
smaller ones behind it; it keeps its place for the next seats that come free.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.models.enums import WaitlistStatus
from app.models.waitlist import WaitlistEntry
from app.services import buyer_limit
from app.services.audit import Actor
from app.services.lifecycles import WAITLIST
from app.services.seats import get_event, shift_seats
from app.services.unit_of_work import UnitOfWork


async def offer_freed_seats(uow: UnitOfWork, event_id: int) -> list[WaitlistEntry]:
    """Offer the event's open seats to waiting entries; returns the entries notified."""
    event = await get_event(uow.session, event_id, for_update=True)
    free = event.available_capacity
    if free <= 0 or not event.sales_open:
        return []
    found = await uow.session.scalars(
        select(WaitlistEntry)
        .where(
            WaitlistEntry.event_id == event_id,
            WaitlistEntry.status == WaitlistStatus.PENDING,
            WaitlistEntry.quantity <= free,
        )
        .order_by(WaitlistEntry.priority, WaitlistEntry.joined_at, WaitlistEntry.id)
        .limit(free)
        .with_for_update()
    )
    candidates = list(found)
    buyers = [(event_id, entry.user_id) for entry in candidates]
    allowance = await buyer_limit.allowance_for(uow.session, [event], buyers)
    expires_at = uow.now + timedelta(hours=uow.settings.waitlist_notification_timeout_hours)
    offered: list[WaitlistEntry] = []
    for entry in candidates:
        # Too many seats for what is free, or for the buyer's limit (they bought since joining): the
        # entry keeps its place for later seats.
        if entry.quantity > free or allowance.refusal(event, entry.user_id, entry.quantity):
            continue
        free -= entry.quantity
        await WAITLIST.apply(
            uow, entry, "notify", Actor.system(), move_seats=False, notified_at=uow.now, expires_at=expires_at
        )
        offered.append(entry)
        if free == 0:
            break
    if offered:  # the declared seat move, once for all the entries offered: one UPDATE of the event's row
        held = sum(entry.quantity for entry in offered)
        await shift_seats(uow, event_id, **WAITLIST.transition("notify", WaitlistStatus.PENDING).seats.of(held))
        uow.holds_until(event_id, expires_at)
    return offered
