"""OpenTelemetry tracing: off unless the standard `OTEL_*` variables ask for it.

On, the service traces each request (FastAPI's own telemetry), each SQL statement (SQLAlchemy's
instrumentation on the service's engine), each Redis command, and each booking batch: a span of its
own, linked to the request span of every booking it served (one batch serves many requests, so it
has no single parent). Off, nothing is installed, FastAPI's telemetry stays disabled and the SDK is
never imported: requests pay nothing for it.

On when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`) or an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none` keep it off. The SDK reads the rest itself: `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from fastapi.telemetry import TelemetryConfig
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, Tracer

from app.core.config import SettingsError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from sqlalchemy.ext.asyncio import AsyncEngine

EXPORTERS = ("otlp", "console")
OTLP_PROTOCOL = "http/protobuf"  # the one OTLP transport installed (no gRPC stack in the image)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Probes and scrapes every few seconds would drown the traces that matter.
UNTRACED_PATHS = frozenset({"/health", "/api/v1/health", "/metrics"})
BATCH_SPAN = "booking.batch"
BATCH_SIZE = "booking.batch.size"  # the span attribute: the bookings its batch served
OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}

_OFF_SPAN: AbstractContextManager[object] = nullcontext()


class _Active:
    """The tracer of booking batches while tracing is on in this process."""

    tracer: Tracer | None = None


def requested_exporters(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the environment asks for: none (tracing off) unless it asks."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if not named and any(environ.get(variable) for variable in ENDPOINT_VARIABLES):
        named = ["otlp"]
    exporters = [name for name in named if name != "none"]
    unknown = sorted(set(exporters) - set(EXPORTERS))
    if unknown:
        _refuse(f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} not available (use {', '.join(EXPORTERS)} or none)")
    if "otlp" in exporters:
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol and protocol != OTLP_PROTOCOL:
            _refuse(f"OTEL_EXPORTER_OTLP_PROTOCOL: only {OTLP_PROTOCOL} is available, not {protocol}")
    return exporters


def provider_from_environment(service_name: str, environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """A tracer provider exporting as the `OTEL_*` variables say, or None when tracing is off."""
    exporters = requested_exporters(environ)
    if not exporters:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, when set, names the service; attributes given here would override it.
    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return provider


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: from OTEL_EXPORTER_OTLP_*


def _refuse(problem: str) -> None:
    print(f"invalid settings: {problem}", file=sys.stderr)
    raise SettingsError(2)


def fastapi_telemetry(provider: TracerProvider | None) -> TelemetryConfig:
    """FastAPI's own request spans: on with the provider, wholly off without one."""
    if provider is None:
        return OFF
    return {**OFF, "tracing": True, "tracer_provider": provider, "operation_spans": False, "exclude": _untraced}


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED_PATHS


def instrument(engine: AsyncEngine, provider: TracerProvider | None) -> Callable[[], None]:
    """Trace this engine's SQL, every Redis command and the booking batches; returns the undo."""
    if provider is None:
        return _nothing
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    sql, redis = SQLAlchemyInstrumentor(), RedisInstrumentor()
    # A version conflict between an instrumentation and its library must stop start-up, not leave
    # tracing silently half-installed. SQLAlchemy's declares "< 2.1" (it predates 2.1) but the
    # engine events it listens to are unchanged in 2.1: tests/test_tracing.py checks its spans.
    sql.instrument(engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True)
    redis.instrument(tracer_provider=provider, raise_exception_on_conflict=True)
    _Active.tracer = provider.get_tracer(__name__)

    def undo() -> None:
        _Active.tracer = None
        redis.uninstrument()
        sql.uninstrument()
        provider.force_flush()

    return undo


def _nothing() -> None:
    return None


def current_span_context() -> SpanContext | None:
    """The current request's span, to link a booking batch to; None when tracing is off."""
    if _Active.tracer is None:
        return None
    span_context = trace.get_current_span().get_span_context()
    return span_context if span_context.is_valid else None


def batch_span(size: int, served: Iterable[SpanContext | None]) -> AbstractContextManager[object]:
    """The span of one booking batch, linked to the requests it serves (nothing when off).

    A root span: the drainer task was started inside one request's context, but the batch
    belongs to all of its requests alike.
    """
    tracer = _Active.tracer
    if tracer is None:
        return _OFF_SPAN
    links = [Link(span_context) for span_context in served if span_context is not None]
    return tracer.start_as_current_span(
        BATCH_SPAN, context=otel_context.Context(), links=links, attributes={BATCH_SIZE: size}
    )


def batch_joined(size: int, joined: Iterable[SpanContext | None]) -> None:
    """Requests that joined the current batch after it started: linked to its span too, and its size
    now `size` (nothing when off)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    for span_context in joined:
        if span_context is not None:
            span.add_link(span_context)
    span.set_attribute(BATCH_SIZE, size)
