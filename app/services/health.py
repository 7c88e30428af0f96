"""Dependency checks for `/api/v1/health`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from app.core import metrics
from app.core.clock import clock
from app.db.redis import RedisUnavailable
from app.runtime import Runtime
from app.services import outbox

CHECK_TIMEOUT_SECONDS = 2.0
REDIS_CHECK_FAILURES: tuple[type[BaseException], ...] = (*RedisUnavailable, TimeoutError)


@dataclass
class HealthReport:
    status: str
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)


async def _database(runtime: Runtime) -> dict[str, Any]:
    started = time.perf_counter()
    async with runtime.sessionmaker() as session:
        await session.execute(text("SELECT 1"))
        waiting, age = await outbox.backlog(session, clock.now())
    latency = round((time.perf_counter() - started) * 1000, 2)
    return {
        "status": "up",
        "latency_ms": latency,
        "outbox_backlog": waiting,
        "outbox_oldest_age_seconds": round(age, 1),
    }


async def _redis(runtime: Runtime) -> dict[str, Any]:
    started = time.perf_counter()
    await runtime.redis.call("ping", lambda client: client.ping())
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def check(runtime: Runtime) -> HealthReport:
    report = HealthReport(status="healthy")
    try:
        report.checks["database"] = await asyncio.wait_for(_database(runtime), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:  # any failure means the database cannot serve us
        report.checks["database"] = {"status": "down", "error": type(exc).__name__}
        report.status = "unhealthy"
    try:
        report.checks["redis"] = await asyncio.wait_for(_redis(runtime), CHECK_TIMEOUT_SECONDS)
    except REDIS_CHECK_FAILURES as exc:
        report.checks["redis"] = {"status": "down", "error": type(exc).__name__}
        if report.status == "healthy":
            report.status = "degraded"
    metrics.record_health(report.status)
    return report
