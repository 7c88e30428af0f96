"""Work waiting per key (an event), run a batch at a time by one drainer per key.

While a batch of one key runs, what arrives for that key waits, and goes in the next batch: under
load, each batch carries everything that came during the one before it. Keys do not wait for one
another. The batches are run by the function given, which answers each item's outcome in order.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")

RunBatch = Callable[[K, list[I]], Awaitable[list[R | BaseException]]]


class KeyedBatches(Generic[K, I, R]):
    def __init__(self, run: RunBatch[K, I, R], most: int) -> None:
        self._run = run
        self._most = most
        self._waiting: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._drainers: dict[K, asyncio.Task[None]] = {}

    async def submit(self, key: K, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((item, future))
        if key not in self._drainers:
            # A fresh context: a batch serves many requests, not the first one's.
            self._drainers[key] = asyncio.create_task(self._drain(key), context=contextvars.Context())
        # Shielded: a client that goes away must not cancel the batch it is part of.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Wait for the batches in flight (graceful shutdown)."""
        await asyncio.gather(*self._drainers.values(), return_exceptions=True)

    async def _drain(self, key: K) -> None:
        try:
            while waiting := self._waiting.pop(key, None):
                batch, rest = waiting[: self._most], waiting[self._most :]
                if rest:
                    self._waiting[key] = rest
                await self._run_one(key, batch)
        except BaseException:  # cancelled: nobody is left waiting for an answer
            for _, future in self._waiting.pop(key, []):
                future.cancel()
            raise
        finally:
            del self._drainers[key]

    async def _run_one(self, key: K, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            outcomes = await self._run(key, [item for item, _ in batch])
        except Exception as exc:  # never leave a caller waiting, and keep draining
            outcomes = [exc] * len(batch)
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
