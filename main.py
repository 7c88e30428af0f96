"""Run the service: `python main.py` (settings from the environment, `.env` or Zero)."""

import asyncio
import atexit
import functools
import os
import shutil
import tempfile
from typing import TypedDict, cast

import uvicorn

from app.api.request_heads import HeadLimitedProtocol
from app.application import configure_service_logging, create_app
from app.core import metrics
from app.core.config import Settings, load_settings
from app.workers import serve_workers, spreads_connections


def main() -> None:
    settings = load_settings()
    if settings.workers > 1:
        share_metrics_between_workers()
        # The supervisor builds no app: its own lines (where it listens, a worker that died and was
        # replaced) are logged as the workers' are.
        configure_service_logging(settings)
    # Several workers need an import string: each process builds its own app.
    app = "app.application:create_app" if settings.workers > 1 else create_app(settings)
    options: ServerOptions = {
        "factory": settings.workers > 1,
        "workers": settings.workers,
        "host": settings.bind_host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
        "timeout_graceful_shutdown": int(settings.shutdown_timeout_seconds),
        "http": head_limited_http(settings),
    }
    if settings.workers > 1 and spreads_connections():
        serve_workers(uvicorn.Config(app, **options))  # a listening socket per worker (app/workers.py)
    else:
        uvicorn.run(app, **options)


class ServerOptions(TypedDict):
    """uvicorn's options, the same for one worker and several: checked against `uvicorn.run`'s and
    `uvicorn.Config`'s parameters where they are passed."""

    factory: bool
    workers: int
    host: str
    port: int
    log_config: None
    access_log: bool
    proxy_headers: bool
    timeout_graceful_shutdown: int
    http: type[asyncio.Protocol]


def head_limited_http(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the request-head bounds. A partial of a module-level class,
    not a class made here: with several workers uvicorn pickles it into each worker process."""
    protocol = functools.partial(
        HeadLimitedProtocol,
        max_head_bytes=settings.max_header_bytes,
        head_timeout=settings.request_head_timeout_seconds,
    )
    return cast("type[asyncio.Protocol]", protocol)  # uvicorn only calls it, as it would a class


def share_metrics_between_workers() -> None:
    """Workers write their metrics to files in a fresh directory, so any one of them can answer
    /metrics for all (prometheus_client's multiprocess mode). It must be set before the workers
    start, and must not hold a previous run's files."""
    # In memory where the machine offers it: every metric update is a write to these files.
    shared_memory = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    directory = tempfile.mkdtemp(prefix="bookings-metrics-", dir=shared_memory)
    os.environ[metrics.MULTIPROCESS_DIR] = directory
    atexit.register(shutil.rmtree, directory, True)


if __name__ == "__main__":
    main()
