"""The request examples of the OpenAPI document. They tell one story that works on a fresh service,
sent in this order (tests/test_openapi.py sends them): an admin puts event 1 on sale with 4 seats; a
user holds 2 seats (hold 1), books them (booking 1), books the other 2 (booking 2); another user
joins the waitlist (entry 1), which an admin moves up; booking 1 is paid (the webhook carries the
`payment_reference` that starting the payment answered), then refunded, which offers its seats to
entry 1; an admin confirms booking 2 by hand; last, an admin puts event 1 behind a waiting room."""

from __future__ import annotations

from typing import Any

Examples = dict[str, dict[str, Any]]


def example(summary: str, value: dict[str, Any], description: str | None = None) -> Examples:
    found: dict[str, Any] = {"summary": summary, "value": value}
    if description:
        found["description"] = description
    return {summary.lower().replace(" ", "_").replace(",", ""): found}


UPSERT_AVAILABILITY = example(
    "Put an event on sale",
    {
        "event_name": "Spring Concert",
        "total_capacity": 4,
        "price": "49.90",
        "currency": "USD",
        "starts_at": "2027-05-01T19:00:00Z",
        "ends_at": "2027-05-01T22:00:00Z",
    },
)
RESERVE = example("Hold two seats", {"quantity": 2})
CREATE_BOOKING = {
    **example(
        "Book a hold",
        {"event_id": 1, "quantity": 2, "reservation_id": 1, "payment_method": "card"},
        "Takes over the seats of your hold 1 (made with `reserveSeats`); `quantity` must equal the hold's.",
    ),
    **example("Book seats", {"event_id": 1, "quantity": 2, "notes": "Aisle seats, please"}),
}
START_PAYMENT = example("Pay by card", {"payment_method": "card"})
PAYMENT_WEBHOOK = example(
    "Payment succeeded",
    {"payment_reference": "pay_3f9a1c2e7b4d5a6f8e9d0c1b", "outcome": "succeeded", "amount": "99.80", "currency": "USD"},
    "`payment_reference` is the one `startPayment` answered; `amount` and `currency` must be the booking's.",
)
JOIN_WAITLIST = example("Wait for two seats", {"event_id": 1, "quantity": 2})
UPDATE_WAITLIST_ENTRY = example("Move an entry up", {"priority": 10, "reason": "Accessibility needs"})
CONFIRM_BOOKING = example("Confirm a box-office payment", {"note": "Paid at the box office"})
REFUND_BOOKING = example("Refund on request", {"reason": "Customer request"})
CONFIGURE_WAITING_ROOM = example(
    "Meter the buyers",
    {"enabled": True, "admit_per_minute": 600, "admission_minutes": 10},
    "Lets 600 buyers a minute into the sale, each for 10 minutes.",
)
