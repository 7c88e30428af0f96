"""Operator endpoints: liveness, detailed health, service information, metrics. Open to all."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app import __version__
from app.api.deps import RuntimeDep
from app.api.v1.responses import INTERNAL_ERROR, problems
from app.core import metrics
from app.schemas.system import HealthRead, InfoRead
from app.services import health

router = APIRouter(tags=["system"])

CAPABILITIES = [
    "bookings",
    "temporary-holds",
    "waitlist",
    "payments",
    "admin",
    "audit-trail",
    "idempotent-posts",
    "event-publishing",
    "events-service-subscriber",
    "availability-stream",
]


@router.get(
    "/health", operation_id="getLiveness", responses=problems(INTERNAL_ERROR), summary="Liveness: the process answers"
)
async def liveness() -> dict[str, str]:
    """`{"status": "ok"}` while the process serves requests; checks nothing else (see `getHealth`)."""
    return {"status": "ok"}


@router.get(
    "/api/v1/health",
    operation_id="getHealth",
    summary="Database and Redis checked: healthy, degraded (Redis down, 200) or unhealthy (503)",
    responses={
        200: {"model": HealthRead, "description": "Healthy, or degraded (Redis down: the service still sells seats)"},
        **problems(INTERNAL_ERROR),
        503: {"model": HealthRead, "description": "Unhealthy: the database is unreachable (a report, not a problem)"},
    },
)
async def detailed_health(runtime: RuntimeDep) -> JSONResponse:
    """Readiness: `status` is `healthy`, `degraded` (Redis down: the service still sells seats, 200) or
    `unhealthy` (the database down: 503), with each check's latency and the outbox's backlog."""
    report = await health.check(runtime)
    body = {"status": report.status, "version": __version__, "checks": report.checks}
    return JSONResponse(body, status_code=503 if report.status == "unhealthy" else 200)


@router.get(
    "/api/v1/info",
    operation_id="getServiceInfo",
    response_model=None,  # the dict as it is; InfoRead documents it
    responses={200: {"model": InfoRead, "description": "This instance"}, **problems(INTERNAL_ERROR)},
    summary="Service name, version, capabilities and settings (no secrets)",
)
async def info(runtime: RuntimeDep) -> dict[str, Any]:
    """What this instance is and the settings a client may want to know (timeouts, limits)."""
    s = runtime.settings
    return {
        "name": s.service_name,
        "version": __version__,
        "environment": s.environment.value,
        "capabilities": CAPABILITIES,
        "settings": {
            "booking_timeout_minutes": s.booking_timeout_minutes,
            "reservation_timeout_minutes": s.reservation_timeout_minutes,
            "waitlist_notification_timeout_hours": s.waitlist_notification_timeout_hours,
            "max_tickets_per_booking": s.max_tickets_per_booking,
            "jwt_algorithm": s.jwt_algorithm,
            "cors_origins": s.cors_origins,
            "events_channel_prefix": s.events_channel_prefix,
            "events_stream": s.events_stream,
            "rate_limit_per_minute": s.rate_limit_per_minute,
        },
    }


@router.get(
    "/metrics",
    operation_id="getMetrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **problems(INTERNAL_ERROR),
    },
)
async def prometheus_metrics(runtime: RuntimeDep) -> Response:
    """Requests, latency, bookings, locks, outbox, pools and SSE clients, for Prometheus to scrape."""
    metrics.REDIS_CIRCUIT_OPEN.set(0 if runtime.redis.available else 1)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
