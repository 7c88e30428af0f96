"""The circuit breaker (app/core/circuit_breaker.py): opens after N failures, one trial after the
cool-off, closed again by a success."""

from __future__ import annotations

import asyncio

import pytest

from app.core.circuit_breaker import CircuitBreaker, CircuitOpenError

COOL_OFF = 0.02


class Dependency:
    def __init__(self) -> None:
        self.calls = 0
        self.healthy = False

    async def __call__(self) -> str:
        self.calls += 1
        if not self.healthy:
            raise ConnectionError("down")
        return "ok"


def breaker(changes: list[bool]) -> CircuitBreaker:
    return CircuitBreaker(3, COOL_OFF, (ConnectionError,), on_state_change=changes.append, not_failures=(TimeoutError,))


async def fail(cb: CircuitBreaker, dependency: Dependency, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            await cb.call(dependency)


async def test_opens_after_the_threshold_and_then_fails_fast() -> None:
    changes: list[bool] = []
    cb, dependency = breaker(changes), Dependency()
    await fail(cb, dependency, 2)
    assert not cb.is_open and changes == []
    await fail(cb, dependency, 1)
    assert cb.is_open and changes == [True]
    with pytest.raises(CircuitOpenError):
        await cb.call(dependency)
    assert dependency.calls == 3  # refused without calling it


async def test_a_failed_trial_after_the_cool_off_opens_it_again() -> None:
    changes: list[bool] = []
    cb, dependency = breaker(changes), Dependency()
    await fail(cb, dependency, 3)
    await asyncio.sleep(COOL_OFF * 2)
    assert not cb.is_open  # half-open: a trial goes through
    await fail(cb, dependency, 1)
    assert cb.is_open and dependency.calls == 4
    assert changes == [True]  # still the same opening


async def test_a_successful_trial_closes_it_and_forgets_the_failures() -> None:
    changes: list[bool] = []
    cb, dependency = breaker(changes), Dependency()
    await fail(cb, dependency, 3)
    await asyncio.sleep(COOL_OFF * 2)
    dependency.healthy = True
    assert await cb.call(dependency) == "ok"
    assert changes == [True, False]
    dependency.healthy = False
    await fail(cb, dependency, 2)
    assert not cb.is_open  # counting starts again from zero


async def test_errors_that_say_nothing_of_health_do_not_count() -> None:
    cb = breaker([])

    async def slow() -> None:
        raise TimeoutError

    for _ in range(5):
        with pytest.raises(TimeoutError):
            await cb.call(slow)
    assert not cb.is_open
