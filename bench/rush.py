"""The `rush` scenario: buyers going through the whole purchase funnel on one event.

Each buyer, with its own user's token: availability -> hold (`/reserve`) -> booking of that hold ->
payment start -> the provider's signed webhook. A buyer whose hold, booking or payment is refused
(409, once seats run out) stops there, and the client starts the next buyer. With `--queue` the
event is behind its waiting room: each buyer first joins the line and polls their ticket at the
interval the service advises until admitted, then holds with the admission token.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from bench.clients import Client
from bench.credentials import Credentials
from bench.results import Run

ONE_SEAT = b'{"quantity": 1}'
PAYMENT = b'{"payment_method": "card"}'
WEBHOOK_PATH = b"/api/v1/payments/webhook"


async def buy_forever(client: Client, run: Run, credentials: Credentials) -> None:
    event_id = run.events[0]
    try:
        while True:
            if await buy(client, run, credentials, event_id):
                run.purchases += 1
    finally:
        client.drop()


async def buy(client: Client, run: Run, credentials: Credentials, event_id: int) -> bool:
    """One buyer's funnel; True when the webhook confirmed the booking."""
    steps, user = run.steps, next(client.users)
    admission = b""
    if run.queue is not None:
        admitted = await wait_in_line(client, run, user, event_id)
        if admitted is None:
            return False
        admission = admitted
    availability = b"/api/v1/availability/%d" % event_id
    if await client.call(steps["availability"], b"GET", availability, user) is None:
        return False
    await client.pause()
    hold = await client.call(steps["hold"], b"POST", availability + b"/reserve", user + admission, ONE_SEAT)
    if hold is None or hold[0] != 201:
        return False
    await client.pause()
    body = orjson.dumps({"event_id": event_id, "quantity": 1, "reservation_id": orjson.loads(hold[1])["id"]})
    booking = await client.call(steps["booking"], b"POST", b"/api/v1/bookings/", user, body)
    if booking is None or booking[0] != 201:
        return False
    await client.pause()
    payment_path = b"/api/v1/bookings/%d/payment" % orjson.loads(booking[1])["id"]
    payment = await client.call(steps["payment"], b"POST", payment_path, user, PAYMENT)
    if payment is None or payment[0] != 201:
        return False
    await client.pause()
    return await pay(client, run, credentials, orjson.loads(payment[1]))


async def wait_in_line(client: Client, run: Run, user: bytes, event_id: int) -> bytes | None:
    """Join the event's waiting room and poll the ticket until admitted: the admission's header line."""
    assert run.queue is not None
    answer = await client.call(run.steps["join"], b"POST", b"/api/v1/queue/%d/join" % event_id, user)
    joined = time.perf_counter()
    while answer is not None and answer[0] in (200, 201):
        ticket = orjson.loads(answer[1])
        if ticket["status"] == "admitted":
            run.queue.admit(ticket, time.perf_counter() - joined)
            return b"X-Admission-Token: %s\r\n" % ticket["admission_token"].encode()
        await asyncio.sleep(ticket["poll_after_seconds"])
        answer = await client.call(run.steps["ticket"], b"GET", b"/api/v1/queue/%d" % event_id, user)
    return None


async def pay(client: Client, run: Run, credentials: Credentials, intent: dict[str, object]) -> bool:
    """What the payment provider sends once the buyer has paid, signed as the provider signs it."""
    body = orjson.dumps(
        {
            "payment_reference": intent["payment_reference"],
            "outcome": "succeeded",
            "amount": intent["amount"],
            "currency": intent["currency"],
        }
    )
    answer = await client.call(run.steps["webhook"], b"POST", WEBHOOK_PATH, credentials.webhook_signature(body), body)
    if answer is None or answer[0] != 200:
        return False
    result = orjson.loads(answer[1])
    return bool(result["result"] == "applied" and result["status"] == "confirmed")
