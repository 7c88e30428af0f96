"""The FastAPI application: routers, error handlers, middleware, and the lifespan's resources."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from app import __version__
from app.api import openapi, problems, routing, system
from app.api.deps import get_principal, limit_writes
from app.api.middleware import RequestContextMiddleware
from app.api.v1 import admin, availability, bookings, payments, queue, waitlist
from app.core import metrics, tracing
from app.core.config import Environment, Settings, load_settings
from app.core.exit_signal import on_exit_signal
from app.core.logging import configure_logging, get_logger, wants_console
from app.runtime import Runtime
from app.services.events_inbound import run_subscriber
from app.services.outbox_relay import OutboxRelay
from app.services.sweeper import run_sweeper
from app.services.warm_up import warm_up

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = get_logger(__name__)

# Python's default is 700: a worker under load met it about 90 times a second, and its young
# collections took 3 to 5% of its CPU. At 10,000 each collection pauses the loop longer (about 6 ms)
# but seldom, and the p99 did not rise (docs/scaling.md, the eighth to tenth rounds; Python 3.11,
# whose collector these thresholds describe).
YOUNG_COLLECTION_THRESHOLD = 10_000


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    runtime = Runtime.from_settings(settings)
    app.state.runtime = runtime
    await warm_up(runtime)  # before the traces start: its statements are not requests' work
    stop_tracing = tracing.instrument(runtime.engine, app.state.tracer_provider)
    relay = OutboxRelay(runtime)
    runtime.transactions.on_published(relay.wake)
    app.state.relay = relay
    tasks = [asyncio.create_task(runtime.feed.run(), name="availability-feed")]
    if settings.background_tasks_enabled:
        tasks += [
            asyncio.create_task(run_sweeper(runtime), name="sweeper"),
            asyncio.create_task(relay.run(), name="outbox-relay"),
            asyncio.create_task(run_subscriber(runtime), name="events-subscriber"),
        ]
    # Objects made at start-up live as long as the process: keep them out of the garbage
    # collector's full passes, which otherwise stall the event loop for tens of milliseconds.
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
    log.info("service_started", environment=settings.environment.value, version=__version__)
    if settings.uses_development_jwt_secret:
        log.warning(
            "development_jwt_secret_in_use",
            detail="JWT_SECRET is the public development secret: anyone can sign tokens; set JWT_SECRET",
        )
    try:
        # Live streams end as soon as a stop is asked for, not when the graceful timeout runs out.
        with on_exit_signal(runtime.feed.close):
            yield
    finally:
        await _shut_down(runtime, relay, tasks)
        stop_tracing()
        metrics.forget_this_process()


async def _shut_down(runtime: Runtime, relay: OutboxRelay, tasks: list[asyncio.Task[None]]) -> None:
    """Stop background work, finish the batch in flight, close the pools, within the time set."""
    budget = runtime.settings.shutdown_timeout_seconds
    log.info("service_stopping")
    runtime.feed.close()
    relay.stop()
    for task in tasks:
        task.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=budget / 2) if tasks else (set(), set())
    if stuck:
        log.warning("background_tasks_not_stopped", tasks=[task.get_name() for task in stuck])
    try:
        await asyncio.wait_for(asyncio.gather(runtime.batcher.close(), runtime.transactions.close()), budget / 2)
    except TimeoutError:
        log.warning("booking_batch_not_finished")
    await runtime.close()
    log.info("service_stopped")


def configure_service_logging(settings: Settings) -> None:
    """The service's logs: JSON lines, or a console layout in development at a terminal."""
    configure_logging(settings.log_level, console=wants_console(settings.environment is Environment.DEVELOPMENT))


def create_app(settings: Settings | None = None, tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The app; traced when the `OTEL_*` variables ask for it, or with the tracer provider given."""
    settings = settings or load_settings()
    configure_service_logging(settings)
    tracer_provider = tracer_provider or tracing.provider_from_environment(settings.service_name)
    # /docs and /redoc with their scripts served by the service itself (a pinned package): no CDN.
    app = FastAPIOffline(
        title="Evently Bookings Service",
        version=__version__,
        description="Bookings, temporary holds and a waitlist for Evently's events: never oversold, "
        "safe to retry, every change audited and announced. Errors are RFC 9457 problem details.",
        lifespan=lifespan,
        # Metrics are Prometheus (/metrics); FastAPI's OpenTelemetry hooks trace requests only when
        # tracing is on (they cost CPU on every request).
        telemetry=tracing.fastapi_telemetry(tracer_provider),
    )
    app.state.settings = settings
    openapi.install(app, settings)
    app.state.tracer_provider = tracer_provider
    problems.register(app)
    routing.install(app)
    app.include_router(system.router)
    guards = [Depends(get_principal)]
    if settings.rate_limit_per_minute:  # every dependency costs on every request: none when the limit is off
        guards.append(Depends(limit_writes))
    user_routers = (bookings.router, availability.router, waitlist.router, queue.router)
    for router in (*user_routers, admin.router, queue.admin_router):
        app.include_router(router, dependencies=guards)
    app.include_router(payments.router)  # signed by the provider, not a user
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    return app
