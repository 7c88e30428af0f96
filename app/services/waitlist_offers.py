"""Offering freed seats to the waitlist (SPEC section 3), inside the transaction that frees them.

Pending entries are walked in priority order, then join time. Each entry whose quantity fits in
the free seats is offered them: its seats move available -> reserved and it becomes `notified`
until its offer expires. An entry that does not fit is skipped, so a large request never blocks
smaller ones behind it; it keeps its place for the next seats that come free.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.models.enums import WaitlistStatus
from app.models.waitlist import WaitlistEntry
from app.schemas.waitlist import WaitlistEntryRead
from app.services import audit, buyer_limit, outbox
from app.services.audit import Actor
from app.services.capacity import get_event, note_hold_expiry, shift_seats


def entry_data(entry: WaitlistEntry) -> dict[str, Any]:
    return WaitlistEntryRead.model_validate(entry).model_dump(mode="json", exclude={"position"})


async def offer_freed_seats(
    session: AsyncSession, settings: Settings, event_id: int, now: datetime
) -> list[WaitlistEntry]:
    """Offer the event's open seats to waiting entries; returns the entries notified."""
    event = await get_event(session, event_id, for_update=True)
    free = event.available_capacity
    if free <= 0 or not event.sales_open:
        return []
    found = await session.scalars(
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
    allowance = await buyer_limit.allowance_for(session, [event], [(event_id, e.user_id) for e in candidates], now)
    offered: list[WaitlistEntry] = []
    expires_at = now + timedelta(hours=settings.waitlist_notification_timeout_hours)
    for entry in candidates:
        # Too many seats for what is free, or for the buyer's limit (they bought since joining): the
        # entry keeps its place for later seats.
        if entry.quantity > free or allowance.refusal(event, entry.user_id, entry.quantity):
            continue
        free -= entry.quantity
        before = entry_data(entry)
        entry.status, entry.notified_at, entry.expires_at = WaitlistStatus.NOTIFIED, now, expires_at
        entry.updated_at = now
        offered.append(entry)
        await session.flush()
        after = entry_data(entry)
        await audit.record(
            session,
            audit.audit_row(Actor.system(), "waitlist.notified", "waitlist_entry", entry.id, now, before, after),
        )
        await outbox.enqueue(session, now, outbox.waitlist_message("WaitlistNotified", entry, now))
        if free == 0:
            break
    held = sum(entry.quantity for entry in offered)
    if held:
        note_hold_expiry(session, event_id, expires_at)
        await shift_seats(session, event_id, available=-held, reserved=held)
    return offered
