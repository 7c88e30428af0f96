"""What a load run collected: per step of the path, the answers by status, latencies and errors."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime


def percentile_ms(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))] * 1000


@dataclass
class Step:
    """One kind of request (`booking`, `hold`, ...) and what its answers were."""

    name: str
    expected: frozenset[int]  # any other status is a failure
    sold_out_codes: frozenset[str]  # the 409 codes that mean the seats ran out; any other 409 is a failure
    statuses: Counter[int] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)  # 409 answers by their problem `code`
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0  # sent, not answered when the load stopped

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def unanswered(self) -> int:
        """Requests whose effect is unknown: in flight at the stop, or cut off by a client error."""
        return self.in_flight + sum(self.errors.values())

    def unexpected(self) -> dict[int, int]:
        return {status: count for status, count in sorted(self.statuses.items()) if status not in self.expected}

    def unexpected_refusals(self) -> dict[str, int]:
        return {code: count for code, count in sorted(self.refusals.items()) if code not in self.sold_out_codes}


@dataclass
class Queue:
    """`rush --queue`: every buyer's ticket once admitted, and how long each waited."""

    admitted_at: dict[int, datetime] = field(default_factory=dict)  # ticket number -> when the line reached it
    waits: list[float] = field(default_factory=list)  # seconds from the join's answer to the admission

    def admit(self, ticket: dict[str, object], waited: float) -> None:
        number = int(str(ticket["ticket_id"]).rsplit("-", 1)[1])
        if number not in self.admitted_at:  # a user cycling back rejoins with the same ticket
            self.admitted_at[number] = datetime.fromisoformat(str(ticket["admitted_at"]))
            self.waits.append(waited)

    def out_of_order(self) -> int:
        """Buyers admitted before someone who joined ahead of them (times are the server's)."""
        times = [self.admitted_at[number] for number in sorted(self.admitted_at)]
        return sum(1 for earlier, later in itertools.pairwise(times) if later < earlier)


@dataclass
class Run:
    scenario: str
    events: list[int]
    steps: dict[str, Step]
    elapsed: float = 0.0
    purchases: int = 0  # rush: webhooks answered `applied` with the booking confirmed
    queue: Queue | None = None  # rush --queue
    max_tickets_per_user: int | None = None

    @property
    def bookings(self) -> int:
        return self.steps["booking"].statuses[201]

    def failures(self) -> list[str]:
        """Every answer or error that must not happen under load, one line each."""
        lines = []
        for step in self.steps.values():
            if unexpected := step.unexpected():
                lines.append(f"{step.name}: unexpected answers {unexpected}")
            if refusals := step.unexpected_refusals():
                lines.append(f"{step.name}: 409 for another reason than seats running out {refusals}")
            if step.errors:
                lines.append(f"{step.name}: client errors {dict(step.errors)}")
        if self.queue is not None and (out_of_order := self.queue.out_of_order()):
            lines.append(f"waiting room: {out_of_order} buyers admitted out of join order")
        return lines


BOOKING_ONLY = ("booking",)
RUSH_STEPS = ("availability", "hold", "booking", "payment", "webhook")
QUEUE_STEPS = ("join", "ticket")
SOLD_OUT = frozenset({"insufficient_capacity"})
AT_LIMIT = frozenset({"ticket_limit_exceeded"})  # with --max-tickets-per-user: a user cycling back
NONE: frozenset[str] = frozenset()
# Per step: the statuses that may come, and the 409 codes that mean the seats ran out.
EXPECTED = {
    "join": (frozenset({200, 201}), NONE),
    "ticket": (frozenset({200}), NONE),
    "availability": (frozenset({200}), NONE),
    "hold": (frozenset({201, 409}), SOLD_OUT),
    "booking": (frozenset({201, 409}), SOLD_OUT),
    "payment": (frozenset({201, 409}), NONE),
    "webhook": (frozenset({200, 409}), NONE),
}


def new_run(scenario: str, events: list[int], *, queue: bool = False, max_tickets_per_user: int | None = None) -> Run:
    names = (QUEUE_STEPS if queue else ()) + (RUSH_STEPS if scenario == "rush" else BOOKING_ONLY)
    steps = {name: Step(name, *EXPECTED[name]) for name in names}
    if max_tickets_per_user is not None:
        for name in ("hold", "booking"):
            if name in steps:
                steps[name].sold_out_codes = steps[name].sold_out_codes | AT_LIMIT
    return Run(scenario, events, steps, queue=Queue() if queue else None, max_tickets_per_user=max_tickets_per_user)
