"""The mixed load of the multi-instance runs (make test-long, make test-ha): clients booking, holding,
cancelling, joining the waitlist and paying through several service processes, and what they saw."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.core.security import create_access_token
from app.services.payments import sign
from tests.conftest import WEBHOOK_SECRET
from tests.service_process import ServiceProcess

EVENTS = list(range(1, 21))


@dataclass
class Tally:
    statuses: Counter[int | str] = field(default_factory=Counter)
    booked: dict[int, str] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)


class Client:
    def __init__(self, user: int, services: list[ServiceProcess], settings: Any, tally: Tally) -> None:
        self.user = user
        self.services = services
        self.tally = tally
        self.headers = {"Authorization": f"Bearer {create_access_token(settings, user)}"}
        self.rng = random.Random(user)
        self.http = httpx.AsyncClient(timeout=10)

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        base = self.rng.choice(self.services).url
        kwargs.setdefault("headers", self.headers)
        try:
            response = await self.http.request(method, base + path, **kwargs)
        except httpx.TransportError as exc:
            self.tally.statuses[type(exc).__name__] += 1
            return None
        self.tally.statuses[response.status_code] += 1
        if response.status_code >= 500 and response.status_code != 503:
            self.tally.server_errors.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response

    def remember(self, response: httpx.Response | None) -> dict[str, Any] | None:
        if response is not None and response.status_code == 201 and "booking_reference" in response.text:
            booking = response.json()
            self.tally.booked[booking["id"]] = booking["booking_reference"]
            return dict(booking)
        return None

    async def run(self, deadline: float) -> None:
        mine: list[dict[str, Any]] = []
        actions = [self.book, self.hold, self.cancel, self.wait, self.pay]
        while time.monotonic() < deadline:
            await self.rng.choices(actions, weights=[5, 2, 1, 2, 2])[0](mine)
            await asyncio.sleep(self.rng.uniform(0, 0.05))
        await self.http.aclose()

    async def book(self, mine: list[dict[str, Any]]) -> None:
        body = {"event_id": self.rng.choice(EVENTS), "quantity": self.rng.randint(1, 3)}
        booking = self.remember(await self.call("POST", "/api/v1/bookings/", json=body))
        if booking:
            mine.append(booking)

    async def hold(self, mine: list[dict[str, Any]]) -> None:
        event_id, quantity = self.rng.choice(EVENTS), self.rng.randint(1, 2)
        hold = await self.call("POST", f"/api/v1/availability/{event_id}/reserve", json={"quantity": quantity})
        if hold is None or hold.status_code != 201:
            return
        await asyncio.sleep(self.rng.uniform(0, 2.5))  # sometimes past the hold's expiry
        if self.rng.random() < 0.7:
            body = {"event_id": event_id, "quantity": quantity, "reservation_id": hold.json()["id"]}
            booking = self.remember(await self.call("POST", "/api/v1/bookings/", json=body))
            if booking:
                mine.append(booking)
        else:
            await self.call("DELETE", f"/api/v1/availability/{event_id}/release?reservation_id={hold.json()['id']}")

    async def cancel(self, mine: list[dict[str, Any]]) -> None:
        if mine:
            booking = mine.pop(self.rng.randrange(len(mine)))
            await self.call("PUT", f"/api/v1/bookings/{booking['id']}/cancel")

    async def wait(self, mine: list[dict[str, Any]]) -> None:
        await self.call("POST", "/api/v1/waitlist/", json={"event_id": self.rng.choice(EVENTS), "quantity": 1})
        entries = await self.call("GET", "/api/v1/waitlist/")
        if entries is None or entries.status_code != 200:
            return
        for entry in entries.json()["items"]:
            if entry["status"] == "notified":
                booking = self.remember(await self.call("POST", f"/api/v1/waitlist/{entry['id']}/book"))
                if booking:
                    mine.append(booking)

    async def pay(self, mine: list[dict[str, Any]]) -> None:
        if not mine:
            return
        booking = self.rng.choice(mine)
        intent = await self.call("POST", f"/api/v1/bookings/{booking['id']}/payment", json={"payment_method": "card"})
        if intent is None or intent.status_code != 201:
            return
        outcome = "succeeded" if self.rng.random() < 0.8 else "failed"
        data = intent.json()
        body = json.dumps(
            {
                "payment_reference": data["payment_reference"],
                "outcome": outcome,
                "amount": data["amount"],
                "currency": data["currency"],
            }
        ).encode()
        await self.call(
            "POST",
            "/api/v1/payments/webhook",
            content=body,
            headers={"Evently-Signature": sign(body, WEBHOOK_SECRET), "content-type": "application/json"},
        )
