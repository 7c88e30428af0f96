"""After the load: what PostgreSQL holds must match what the clients were told.

Requests in flight when the load stopped (at most one per connection) and requests cut off by a
client error may have taken effect without an answer: a row count may exceed its answers by that
many, never fall short of them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

from bench.results import Run

INVARIANT = """
SELECT count(*) FROM event_availability
WHERE available_capacity + reserved_capacity + confirmed_capacity <> total_capacity
   OR available_capacity < 0 OR reserved_capacity < 0 OR confirmed_capacity < 0
"""

# Seats per event from the rows (pending and confirmed bookings, live holds) against its counters.
SEATS = """
WITH b AS (SELECT event_id,
                  coalesce(sum(quantity) FILTER (WHERE status = 'pending'), 0) AS pending,
                  coalesce(sum(quantity) FILTER (WHERE status = 'confirmed'), 0) AS confirmed
           FROM bookings WHERE event_id = ANY($1) GROUP BY event_id),
     h AS (SELECT event_id, sum(quantity) AS held
           FROM reservations WHERE status = 'active' AND event_id = ANY($1) GROUP BY event_id)
SELECT count(*) FILTER (WHERE coalesce(b.pending, 0) + coalesce(b.confirmed, 0) + coalesce(h.held, 0)
                              > e.total_capacity) AS oversold,
       count(*) FILTER (WHERE e.reserved_capacity <> coalesce(b.pending, 0) + coalesce(h.held, 0)
                           OR e.confirmed_capacity <> coalesce(b.confirmed, 0)) AS miscounted
FROM event_availability e LEFT JOIN b USING (event_id) LEFT JOIN h USING (event_id)
WHERE e.event_id = ANY($1)
"""

# Buyers holding more live seats of an event than its per-buyer limit.
OVER_LIMIT = """
SELECT count(*) FROM (
    SELECT s.event_id, s.user_id FROM (
        SELECT event_id, user_id, quantity FROM bookings
        WHERE event_id = ANY($1)
          AND (status IN ('confirmed', 'completed') OR (status = 'pending' AND expires_at > now()))
        UNION ALL
        SELECT event_id, user_id, quantity FROM reservations
        WHERE event_id = ANY($1) AND status = 'active' AND expires_at > now()
    ) s JOIN event_availability e USING (event_id)
    WHERE e.max_tickets_per_user IS NOT NULL
    GROUP BY s.event_id, s.user_id, e.max_tickets_per_user HAVING sum(s.quantity) > e.max_tickets_per_user
) over_limit
"""

ROWS = """
SELECT (SELECT count(*) FROM bookings WHERE event_id = ANY($1)) AS bookings,
       (SELECT count(*) FROM bookings WHERE event_id = ANY($1) AND status = 'confirmed') AS confirmed,
       (SELECT count(*) FROM audit_log a JOIN bookings b ON a.entity_type = 'booking' AND a.entity_id = b.id
         AND a.action = 'booking.created' WHERE b.event_id = ANY($1)) AS audits,
       (SELECT count(*) FROM outbox WHERE kind = 'created' AND event_id = ANY($1)) AS messages,
       (SELECT count(*) FROM reservations WHERE event_id = ANY($1)) AS holds
"""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    detail: str
    ok: bool

    def line(self) -> str:
        return f"{self.name:<30}{self.detail}  {'OK' if self.ok else 'MISMATCH'}"


def within(rows: int, answers: int, unanswered: int) -> tuple[str, bool]:
    """Rows may exceed answers by the requests whose answer never came, never fall short."""
    extra = rows - answers
    note = f" ({extra} of {unanswered} unanswered took effect)" if unanswered else ""
    return note, 0 <= extra <= unanswered


async def settled_rows(connection: asyncpg.Connection, events: list[int], wait: float = 5.0) -> asyncpg.Record:
    """The row counts once the requests still in the server when the load stopped have finished."""
    previous = await connection.fetchrow(ROWS, events)
    for _ in range(int(wait / 0.25)):
        await asyncio.sleep(0.25)
        current = await connection.fetchrow(ROWS, events)
        if current == previous:
            return current
        previous = current
    return previous


async def check_database(dsn: str, run: Run) -> list[Check]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await settled_rows(connection, run.events)
        broken = await connection.fetchval(INVARIANT)
        seats = await connection.fetchrow(SEATS, run.events)
        over_limit = await connection.fetchval(OVER_LIMIT, run.events)
    finally:
        await connection.close()
    booking = run.steps["booking"]
    note, counted = within(rows["bookings"], run.bookings, booking.unanswered)
    checks = [
        Check("invariant violations", f"{broken}", broken == 0),
        Check("201 answers / booking rows", f"{run.bookings} / {rows['bookings']}{note}", counted),
        Check("audit rows / outbox rows", f"{rows['audits']} / {rows['messages']}",
              rows["audits"] == rows["messages"] == rows["bookings"]),
        Check("seat counters vs rows", f"{seats['miscounted']} events miscounted", seats["miscounted"] == 0),
        Check("seats oversold", f"{seats['oversold']} events", seats["oversold"] == 0),
        Check("buyers over their limit", f"{over_limit} (limit {run.max_tickets_per_user})", over_limit == 0),
    ]  # fmt: skip
    if run.scenario == "rush":
        checks += rush_checks(run, rows)
    return checks


def rush_checks(run: Run, rows: asyncpg.Record) -> list[Check]:
    held = run.steps["hold"].statuses[201]
    hold_note, holds_ok = within(rows["holds"], held, run.steps["hold"].unanswered)
    paid_note, paid_ok = within(rows["confirmed"], run.purchases, run.steps["webhook"].unanswered)
    return [
        Check("201 holds / hold rows", f"{held} / {rows['holds']}{hold_note}", holds_ok),
        Check("webhooks applied / confirmed", f"{run.purchases} / {rows['confirmed']}{paid_note}", paid_ok),
    ]
