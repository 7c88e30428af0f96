"""Live availability for Server-Sent Events: one Redis subscription per instance, shared.

Writers publish the new figures of a committed change's events, all in one message (a JSON list:
a booking batch touches many events). An instance listens on the channel only while it has clients
of its own, and hands each update to the clients of that event; an instance nobody watches through
spends nothing on the feed but its own publishing.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import orjson
from redis.asyncio.client import PubSub

from app.core import metrics
from app.core.logging import get_logger
from app.db.redis import RedisGateway, queue_publish

log = get_logger(__name__)
CLIENT_QUEUE_SIZE = 64
LISTEN_CHECK_SECONDS = 1.0


class AvailabilityFeed:
    def __init__(self, gateway: RedisGateway) -> None:
        self._gateway = gateway
        self.channel = gateway.key("availability-feed")
        self._clients: dict[int, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self._watched = asyncio.Event()  # some local client is connected
        self._listening = asyncio.Event()  # the channel is subscribed to
        self.shutting_down = asyncio.Event()  # for the instance's other live streams (the waiting room's)

    def queue_publish(self, pipe: Any, updates: list[dict[str, Any]]) -> None:
        """Add the announcement of events' new figures to a pipeline the caller sends."""
        queue_publish(pipe, self.channel, orjson.dumps(updates))

    async def subscribe(self, event_id: int, ready_within: float = 1.0) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue of the event's updates, once the instance listens (or `ready_within` has passed:
        with Redis down the stream still starts, and updates follow when it is back)."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(CLIENT_QUEUE_SIZE)
        self._clients.setdefault(event_id, set()).add(queue)
        metrics.SSE_CLIENTS.inc()
        self._watched.set()
        if self.shutting_down.is_set():  # a stream starting now ends at once
            _offer(queue, None)
        with suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout=ready_within)
        return queue

    def unsubscribe(self, event_id: int, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        clients = self._clients.get(event_id)
        if clients and queue in clients:
            clients.discard(queue)
            metrics.SSE_CLIENTS.dec()
            if not clients:
                del self._clients[event_id]
            if not self._clients:
                self._watched.clear()

    def close(self) -> None:
        """Shutdown: every stream ends."""
        self.shutting_down.set()
        for clients in self._clients.values():
            for queue in clients:
                _offer(queue, None)

    def _dispatch(self, raw: bytes) -> None:
        try:
            updates = orjson.loads(raw)
            addressed = [(self._clients.get(int(figures["event_id"]), ()), figures) for figures in updates]
        except (ValueError, KeyError, TypeError):
            log.warning("availability_feed_bad_message")
            return
        for clients, figures in addressed:
            for queue in clients:
                _offer(queue, figures)

    async def run(self) -> None:
        """Listen on the feed channel while local clients watch, reconnecting by itself."""
        while True:
            await self._watched.wait()
            await self._gateway.keep_subscribed([self.channel], self._deliver, "availability_feed")

    async def _deliver(self, pubsub: PubSub) -> None:
        """Hand updates to local clients until the last one has gone."""
        self._listening.set()
        try:
            while self._clients:
                message = await pubsub.get_message(timeout=LISTEN_CHECK_SECONDS)
                if message is not None:
                    self._dispatch(message["data"])
        finally:
            # Before the subscription closes, however this ends: a client arriving meanwhile
            # waits for the next subscription instead of trusting this one.
            self._listening.clear()


def _offer(queue: asyncio.Queue[dict[str, Any] | None], item: dict[str, Any] | None) -> None:
    """A client too slow to keep up loses its oldest update rather than blocking everyone."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
