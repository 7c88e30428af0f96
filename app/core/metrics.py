"""Prometheus metrics of the service, in one place so names stay consistent.

With several worker processes (`WORKERS` > 1) each worker writes its figures to files in
`PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode, set up by `main.py`), and
`/metrics`, whichever worker answers it, adds up all of them. Each gauge says how: a sum over the
live workers, or the value a worker set most recently for figures every worker reads alike.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DB_POOL_CHECKED_OUT = Gauge(
    "db_pool_connections_in_use", "Database connections checked out", multiprocess_mode="livesum"
)
DB_POOL_SIZE = Gauge("db_pool_size", "Database connections held by the pool", multiprocess_mode="livesum")
REDIS_CIRCUIT_OPEN = Gauge("redis_circuit_open", "1 while a Redis circuit breaker is open", multiprocess_mode="livemax")
REDIS_FAILURES = Counter("redis_failures_total", "Redis calls that failed", ["operation"])
REDIS_POOL_TIMEOUTS = Counter(
    "redis_pool_timeouts_total", "Redis calls that found no pooled connection free in time", ["operation"]
)
AUTH_REVOCATION_UNCHECKED = Counter(
    "auth_revocation_unchecked_total", "Tokens accepted without a deny-list check (Redis down)"
)

BOOKINGS = Counter("bookings_total", "Booking attempts by outcome", ["outcome"])
BOOKING_BATCH_SIZE = Histogram(
    "booking_batch_size", "Bookings committed per transaction", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
BOOKING_BATCH_SPLITS = Counter(
    "booking_batch_splits_total", "Booking batches split in two after a data error of one of their requests"
)
LOCK_ACQUISITIONS = Counter("event_lock_acquisitions_total", "Per-event lock attempts", ["result"])
LOCK_WAIT = Histogram(
    "event_lock_wait_seconds",
    "Time spent waiting for a per-event lock",
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2),
)
VERSION_CONFLICT_RETRIES = Counter(
    "version_conflict_retries_total", "Capacity updates retried after a version conflict"
)
EXPIRED_BY_SWEEPER = Counter("sweeper_expired_total", "Holds expired by the sweeper", ["kind"])

OUTBOX_PUBLISHED = Counter("outbox_published_total", "Lifecycle messages published", ["type"])
OUTBOX_BACKLOG = Gauge("outbox_backlog", "Outbox messages waiting to be published", multiprocess_mode="livemostrecent")
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_age_seconds", "Age of the oldest unpublished message", multiprocess_mode="livemostrecent"
)
OUTBOX_ERRORS = Counter("outbox_relay_errors_total", "Relay passes that failed")
INBOUND_MESSAGES = Counter("inbound_messages_total", "Events-service messages", ["result"])
CACHE_LOOKUPS = Counter("availability_cache_total", "Availability cache lookups", ["result"])
WAITING_ROOM_WAITING = Gauge(
    "waiting_room_waiting", "Buyers waiting in an event's line", ["event_id"], multiprocess_mode="livemostrecent"
)
WAITING_ROOM_ADMITTED = Counter("waiting_room_admitted_total", "Buyers admitted from a line", ["event_id"])
WAITING_ROOM_ADMISSION_RATE = Gauge(
    "waiting_room_admission_rate_per_minute",
    "Measured admissions a minute of an event's line",
    ["event_id"],
    multiprocess_mode="livemostrecent",
)
WAITING_ROOM_WAIT = Histogram(
    "waiting_room_wait_seconds",
    "Time from joining a line to admission",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
SSE_CLIENTS = Gauge("sse_clients", "Clients connected to availability streams", multiprocess_mode="livesum")
HEALTH_STATUSES = ("healthy", "degraded", "unhealthy")
HEALTH_STATUS = Gauge(
    "health_status",
    "1 for the status the latest /api/v1/health check found, 0 for the others",
    ["status"],
    multiprocess_mode="livemostrecent",
)


def record_health(status: str) -> None:
    for name in HEALTH_STATUSES:
        HEALTH_STATUS.labels(name).set(1 if name == status else 0)


def exposition() -> bytes:
    """Every metric in Prometheus' text format: this process's, or all workers' added up."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


def forget_this_process() -> None:
    """A worker shutting down: its live gauges no longer count."""
    if os.environ.get(MULTIPROCESS_DIR):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
