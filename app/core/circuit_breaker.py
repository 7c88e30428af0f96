"""A small async circuit breaker: after repeated failures, fail fast for a cool-off period."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class CircuitOpenError(ConnectionError):
    """The dependency failed repeatedly; calls are refused until the cool-off ends."""


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        reset_seconds: float,
        failure_types: tuple[type[BaseException], ...],
        on_state_change: Callable[[bool], None] | None = None,
        not_failures: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._threshold = failure_threshold
        self._reset_seconds = reset_seconds
        self._failure_types = failure_types
        self._not_failures = not_failures  # subclasses of failure types that say nothing of health
        self._on_state_change = on_state_change
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        """Open while cooling off; after the cool-off one trial call is let through."""
        if self._opened_at is None:
            return False
        return time.monotonic() - self._opened_at < self._reset_seconds

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        if self.is_open:
            raise CircuitOpenError("circuit open: dependency recently failed")
        try:
            result = await operation()
        except self._not_failures:
            raise
        except self._failure_types:
            self.record_failure()
            raise
        self.record_success()
        return result

    def record_failure(self) -> None:
        self._failures += 1
        if self._failures >= self._threshold:
            was_open = self._opened_at is not None
            self._opened_at = time.monotonic()
            if not was_open and self._on_state_change:
                self._on_state_change(True)

    def record_success(self) -> None:
        if self._opened_at is not None and self._on_state_change:
            self._on_state_change(False)
        self._failures = 0
        self._opened_at = None
