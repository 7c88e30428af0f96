"""The CPU of the booking path alone, without HTTP: batches of new bookings handed to the batcher in
this process, against the real PostgreSQL and Redis of the environment (`DATABASE_URL`,
`REDIS_URL`; the database migrated, as for `make run`).

Each round books `--size` single seats at once, each for another user, either all of one event
(`hot`) or each of a random one of `--events` (`spread`); the two kinds alternate, so a change of
the machine's speed falls on both alike. It prints the process's CPU per batch and per booking for each, and their
ratio: what a batch's events cost beyond its bookings, the figure to compare before and after a
change of the batch path (bench/README.md).

    .venv/bin/python -m bench.batch_cpu --rounds 300 --size 16 --events 1000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal

import uvloop
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.models.event_availability import EventAvailability
from app.runtime import Runtime
from app.schemas.availability import EventAvailabilityUpsert
from app.services.audit import Actor
from app.services.availability import upsert
from app.services.booking_batcher import BookingRequest

FIRST_EVENT = 9_000_001  # far from the ids a benchmark or a person creates
FIRST_USER = 50_000_001
SEATS = 10_000_000
WARM_UP_ROUNDS = 20


@dataclass
class Tally:
    rounds: int = 0
    cpu: float = 0.0
    bookings: int = 0

    def add(self, cpu: float, bookings: int) -> None:
        self.rounds += 1
        self.cpu += cpu
        self.bookings += bookings

    def line(self, name: str) -> str:
        per_batch = self.cpu / self.rounds * 1000
        per_booking = self.cpu / self.bookings * 1e6
        return f"{name:8s} {per_batch:6.2f} ms CPU per batch   {per_booking:5.0f} us per booking"


@dataclass
class Rounds:
    runtime: Runtime
    events: list[int]
    size: int
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    next_user: int = FIRST_USER

    async def book(self, spread: bool) -> float:
        """One batch; the process CPU it took."""
        requests = [self._request(self.rng.choice(self.events) if spread else self.events[0]) for _ in range(self.size)]
        started = time.process_time()
        await asyncio.gather(*(self.runtime.batcher.submit(request) for request in requests))
        return time.process_time() - started

    def _request(self, event_id: int) -> BookingRequest:
        self.next_user += 1
        return BookingRequest(
            actor=Actor("user", self.next_user), user_id=self.next_user, event_id=event_id, quantity=1
        )


async def ensure_events(runtime: Runtime, count: int) -> list[int]:
    """The benchmark's events, created the first time (with seats enough for any run)."""
    wanted = list(range(FIRST_EVENT, FIRST_EVENT + count))

    async def existing(session: AsyncSession) -> set[int]:
        query = select(EventAvailability.event_id).where(EventAvailability.event_id.in_(wanted))
        return set((await session.scalars(query)).all())

    there = await runtime.transactions.read(existing)
    data = EventAvailabilityUpsert(event_name="batch CPU", total_capacity=SEATS, price=Decimal("10.00"))
    for event_id in wanted:
        if event_id not in there:
            await upsert(runtime, Actor.system(), event_id, data)
    return wanted


async def measure(rounds: int, size: int, event_count: int) -> None:
    # No linger: a round is one batch, whatever the previous one was.
    runtime = Runtime.from_settings(Settings(booking_batch_linger_ms=0))
    try:
        load = Rounds(runtime, await ensure_events(runtime, event_count), size)
        for index in range(WARM_UP_ROUNDS):
            await load.book(spread=bool(index % 2))
        hot, spread = Tally(), Tally()
        for _ in range(rounds):
            hot.add(await load.book(spread=False), size)
            spread.add(await load.book(spread=True), size)
    finally:
        await runtime.close()
    print(f"{rounds} rounds of each kind, {size} bookings per batch, 1 event against {event_count}")
    print(hot.line("hot"))
    print(spread.line("spread"))
    print(f"spread/hot {spread.cpu / hot.cpu:.2f} (CPU per batch, same run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="batches of each kind (default 300)")
    parser.add_argument("--size", type=int, default=16, help="bookings per batch (default 16)")
    parser.add_argument("--events", type=int, default=1000, help="events of the spread batches (default 1000)")
    args = parser.parse_args()
    uvloop.run(measure(args.rounds, args.size, args.events))


if __name__ == "__main__":
    main()
