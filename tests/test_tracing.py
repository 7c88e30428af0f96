"""OpenTelemetry tracing: off by default, and when on, requests, SQL, Redis and booking batches."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from app.application import create_app
from app.core import tracing
from app.core.config import Settings
from tests.conftest import ROOT, Api
from tests.support import BLOCKED_SERVICE_WRITE, lock_held_elsewhere, until

BOOKING_ROUTE = "/api/v1/bookings/"


@asynccontextmanager
async def traced_app(settings: Settings, provider: TracerProvider | None = None) -> AsyncIterator[Api]:
    app = create_app(settings, tracer_provider=provider)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, settings, app.state.runtime)


def wrapped(function: object) -> bool:
    """Instrumented by OpenTelemetry (a wrapt wrapper, which has `__wrapped__`)."""
    return hasattr(function, "__wrapped__")


def in_memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def request_spans(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [
        span
        for span in spans
        if span.kind is SpanKind.SERVER and (span.attributes or {}).get("http.route") == BOOKING_ROUTE
    ]


def in_trace(spans: tuple[ReadableSpan, ...], root: ReadableSpan, system: str) -> list[ReadableSpan]:
    """The spans of one database system (`db.system` or its newer name) in the root's trace."""
    trace_id = root.context.trace_id
    return [
        span
        for span in spans
        if span.context.trace_id == trace_id
        and system in {(span.attributes or {}).get("db.system"), (span.attributes or {}).get("db.system.name")}
    ]


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "bookings"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_tracing_is_off_unless_the_otel_variables_ask(environ: dict[str, str], exporters: list[str]) -> None:
    assert tracing.requested_exporters(environ) == exporters


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_an_exporter_that_is_not_installed_stops_start_up(environ: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        tracing.requested_exporters(environ)


def test_off_by_default_installs_nothing(database_url: str, redis_url: str) -> None:
    """Without OTEL_* variables the SDK is never imported and Redis/SQLAlchemy stay unwrapped."""
    script = """
import asyncio, sys
import redis.asyncio
from app.application import create_app
from tests.conftest import make_settings

async def main():
    app = create_app(make_settings(sys.argv[1], sys.argv[2]))
    async with app.router.lifespan_context(app):
        assert app.state.tracer_provider is None
        assert not hasattr(redis.asyncio.Redis.execute_command, "__wrapped__")
    # (redis-py itself imports the SDK's metrics part when it is installed, for its own metrics.)
    tracing_parts = ("opentelemetry.sdk.trace", "opentelemetry.instrumentation", "opentelemetry.exporter")
    loaded = sorted(name for name in sys.modules if name.startswith(tracing_parts))
    assert not loaded, loaded
    print("untraced")

asyncio.run(main())
"""
    environ = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", script, database_url, redis_url],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "untraced" in result.stdout, result.stderr


async def test_a_booking_traces_its_request_sql_redis_and_batch(settings: Settings) -> None:
    provider, exporter = in_memory_provider()
    async with traced_app(settings, provider) as api:
        assert wrapped(Redis.execute_command)
        await api.create_event(1, capacity=10)
        exporter.clear()
        response = await api.book(user_id=7, event_id=1)
        assert response.status_code == 201, response.text
    spans = exporter.get_finished_spans()
    (request,) = request_spans(spans)
    assert request.name == f"POST {BOOKING_ROUTE}"
    assert (request.attributes or {}).get("http.response.status_code") == 201
    (batch,) = [span for span in spans if span.name == tracing.BATCH_SPAN]
    assert batch.parent is None and [link.context for link in batch.links] == [request.context]
    assert (batch.attributes or {}).get("booking.batch.size") == 1
    batch_sql = in_trace(spans, batch, "postgresql")
    assert any("INSERT INTO bookings" in str((span.attributes or {}).get("db.statement", "")) for span in batch_sql)
    assert in_trace(spans, batch, "redis"), "the batch's event lock is taken in Redis"
    # The token's deny-list lookup shares its round trip with every request waiting at that moment,
    # so it is a trace of its own (like the batch), not a child of one of them.
    lookups = [
        span
        for span in spans
        if span.parent is None
        and "redis" in {(span.attributes or {}).get("db.system"), (span.attributes or {}).get("db.system.name")}
    ]
    assert lookups, "the deny-list round trip is traced"
    assert not in_trace(spans, request, "redis")
    assert not wrapped(Redis.execute_command), "undone at shutdown: the next app in this process is not traced"


async def test_a_batch_span_links_every_request_it_served(settings: Settings, db: AsyncConnection) -> None:
    """Three bookings: the first one's batch is held up on the event's row (its UPDATE waits for
    the test's row lock), so the other two queue behind it and are booked together in the next
    batch, whose span links both requests."""
    holder = int((await db.execute(text("SELECT pg_backend_pid()"))).scalar_one())
    await db.rollback()

    @asynccontextmanager
    async def row_locked(_api: Api) -> AsyncIterator[None]:
        async with db.begin():
            await db.execute(text("SELECT 1 FROM event_availability WHERE event_id = 1 FOR UPDATE"))
            yield

    async def write_blocked(_api: Api) -> None:
        engine = create_async_engine(settings.sqlalchemy_database_url)
        try:
            async with engine.connect() as watch, asyncio.timeout(10):
                params = {"name": settings.service_name, "holder": holder}
                while (await watch.execute(BLOCKED_SERVICE_WRITE, params)).first() is None:
                    await watch.rollback()
                    await asyncio.sleep(0.01)
        finally:
            await engine.dispose()

    spans = await three_bookings_the_first_held_up(settings, row_locked, write_blocked)
    requests = request_spans(spans)
    assert len(requests) == 3
    batches = sorted((span for span in spans if span.name == tracing.BATCH_SPAN), key=lambda span: span.start_time or 0)
    assert [len(batch.links) for batch in batches] == [1, 2]
    served = {link.context.span_id for link in batches[1].links}
    later = {span.context.span_id for span in requests if span.context.span_id != batches[0].links[0].context.span_id}
    assert served == later and len(served) == 2
    assert (batches[1].attributes or {}).get("booking.batch.size") == 2


async def test_requests_that_join_a_batch_late_are_linked_to_its_span(settings: Settings) -> None:
    """The first booking's batch waits for the event's lock (held by another instance); two more
    queue meanwhile and join it once it has the lock: one batch span, linking all three requests."""

    async def batch_taken(api: Api) -> None:  # it cannot get past the lock the test holds
        await until(lambda: first_batch_taken(api))

    spans = await three_bookings_the_first_held_up(settings, lambda api: lock_held_elsewhere(api, 1), batch_taken)
    (batch,) = [span for span in spans if span.name == tracing.BATCH_SPAN]
    assert {link.context.span_id for link in batch.links} == {span.context.span_id for span in request_spans(spans)}
    assert len(batch.links) == 3 and (batch.attributes or {}).get("booking.batch.size") == 3


async def three_bookings_the_first_held_up(
    settings: Settings,
    hold: Callable[[Api], AbstractAsyncContextManager[None]],
    held_up: Callable[[Api], Awaitable[None]],
) -> tuple[ReadableSpan, ...]:
    """Three bookings of event 1: the first one's batch held up by `hold` (`held_up` returns once it
    is), the other two sent then and queued; each answered 201. The spans they left."""
    provider, exporter = in_memory_provider()
    async with traced_app(settings, provider) as api:
        await api.create_event(1, capacity=10)
        exporter.clear()
        async with hold(api):
            first = asyncio.create_task(api.book(user_id=1, event_id=1))
            await held_up(api)
            others = [asyncio.create_task(api.book(user_id=user, event_id=1)) for user in (2, 3)]
            await until(lambda: len(api.runtime.batcher._queue) == 2)
        responses = await asyncio.gather(first, *others)
        assert [response.status_code for response in responses] == [201, 201, 201]
    return exporter.get_finished_spans()


def first_batch_taken(api: Api) -> bool:
    """The first batch has left the queue."""
    batcher = api.runtime.batcher
    return batcher._drainer is not None and not batcher._queue


class _Collector(BaseHTTPRequestHandler):
    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        type(self).received.append(message)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


async def test_otel_variables_export_spans_over_otlp(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME alone turn tracing on, to a collector."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "bookings-under-test")
        async with traced_app(settings) as api:
            await api.create_event(1, capacity=5)
            assert (await api.book(user_id=1, event_id=1)).status_code == 201
    finally:
        server.shutdown()
        server.server_close()
    exported = [
        (resource.resource, span)
        for message in _Collector.received
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {span.name for _, span in exported}
    assert {f"POST {BOOKING_ROUTE}", tracing.BATCH_SPAN} <= names
    services = {
        attribute.value.string_value
        for resource, _ in exported
        for attribute in resource.attributes
        if attribute.key == "service.name"
    }
    assert services == {"bookings-under-test"}
