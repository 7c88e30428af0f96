"""Simulated clients: each keeps one keep-alive connection and times every request it makes.

The load stops by cancelling the clients at the deadline: a request sent and not yet answered
then counts as in flight (its effect on the database is unknown; the checks allow for it).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import orjson

from bench.http import Connection, ProtocolError
from bench.results import Step

CONFLICT = 409


def refusal_code(problem: bytes) -> str:
    """The `code` of a problem+json answer."""
    try:
        return str(orjson.loads(problem).get("code"))
    except (orjson.JSONDecodeError, AttributeError):
        return "unreadable"


class Client:
    def __init__(self, base_url: str, users: Iterator[bytes], think_seconds: float) -> None:
        self.base_url = base_url
        self.users = users  # shared by all clients: every request takes the next user's token
        self.rng = random.Random()
        self._think = think_seconds
        self._connection: Connection | None = None

    async def call(
        self, step: Step, method: bytes, path: bytes, headers: bytes, body: bytes = b""
    ) -> tuple[int, bytes] | None:
        """One timed request; None when it failed without an answer (counted as a client error)."""
        started = time.perf_counter()
        step.in_flight += 1  # stays counted if the load is cancelled during the request
        try:
            self._connection = self._connection or await Connection.open(self.base_url)
            status, answer = await self._connection.request(method, path, headers, body)
        except (OSError, ProtocolError) as exc:
            step.in_flight -= 1
            step.errors[type(exc).__name__] += 1
            self.drop()  # a new connection for the next request
            return None
        step.in_flight -= 1
        step.statuses[status] += 1
        step.latencies.append(time.perf_counter() - started)
        if status == CONFLICT:
            step.refusals[refusal_code(answer)] += 1
        return status, answer

    async def pause(self) -> None:
        """A random pause (exponential, `--think-ms` on average) so clients do not fire in lockstep."""
        if self._think:
            await asyncio.sleep(self.rng.expovariate(1 / self._think))

    def drop(self) -> None:
        if self._connection is not None:
            self._connection.abort()
            self._connection = None


async def book_forever(client: Client, step: Step, events: list[int]) -> None:
    """`hot` and `spread`: one seat of a random event per request, each from the next user."""
    try:
        while True:
            body = b'{"event_id": %d, "quantity": 1}' % client.rng.choice(events)
            await client.call(step, b"POST", b"/api/v1/bookings/", next(client.users), body)
            await client.pause()
    finally:
        client.drop()


async def run_for(duration: float, clients: list[Coroutine[Any, Any, None]]) -> None:
    """Run the clients for `duration` seconds, then cancel them; a client's own failure is raised."""
    tasks = [asyncio.create_task(coroutine) for coroutine in clients]
    done, _ = await asyncio.wait(tasks, timeout=duration, return_when=asyncio.FIRST_EXCEPTION)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error
