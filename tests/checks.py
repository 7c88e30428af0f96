"""Assertions about the database that many tests share."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

INVARIANT_VIOLATIONS = text(
    """
    SELECT e.event_id FROM event_availability e
    LEFT JOIN (
        SELECT event_id,
               sum(quantity) FILTER (WHERE status = 'pending') AS pending,
               sum(quantity) FILTER (WHERE status IN ('confirmed', 'completed')) AS sold
        FROM bookings GROUP BY event_id
    ) b USING (event_id)
    LEFT JOIN (
        SELECT event_id, sum(quantity) AS held FROM reservations WHERE status = 'active' GROUP BY event_id
    ) r USING (event_id)
    LEFT JOIN (
        SELECT event_id, sum(quantity) AS offered FROM waitlist_entries WHERE status = 'notified' GROUP BY event_id
    ) w USING (event_id)
    WHERE e.available_capacity + e.reserved_capacity + e.confirmed_capacity <> e.total_capacity
       OR e.available_capacity < 0 OR e.reserved_capacity < 0 OR e.confirmed_capacity < 0
       OR e.reserved_capacity <> coalesce(b.pending, 0) + coalesce(r.held, 0) + coalesce(w.offered, 0)
       OR e.confirmed_capacity <> coalesce(b.sold, 0)
    """
)


async def assert_invariant(db: AsyncConnection) -> None:
    """SPEC section 1, and every seat accounted for by exactly one live row."""
    await db.rollback()
    broken = (await db.execute(INVARIANT_VIOLATIONS)).scalars().all()
    assert broken == [], f"capacity invariant broken for events {broken}"


async def count(db: AsyncConnection, table: str, where: str = "true") -> int:
    await db.rollback()
    return int((await db.execute(text(f"SELECT count(*) FROM {table} WHERE {where}"))).scalar_one())
