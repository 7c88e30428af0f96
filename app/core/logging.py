"""One pipeline for every log line; the request id is bound through contextvars by the middleware.

The service's own events are rendered by structlog directly (the hot path: one line per request);
everything logged through the standard library (uvicorn, asyncio, alembic, Python warnings,
uncaught exceptions) goes through structlog's ProcessorFormatter on the root logger, with the same
processors and renderer, to the same stream. JSON lines on stdout; in development on a terminal,
structlog's console lines, which a person can read.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any

import orjson
import structlog


def wants_console(development: bool) -> bool:
    """Readable lines for a person at a terminal; JSON for everything that collects logs."""
    return development and sys.stdout.isatty()


def configure_logging(level: str, *, console: bool = False) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # The console renderer lays out tracebacks itself; JSON carries them as a string field.
    finish: list[structlog.types.Processor] = [] if console else [structlog.processors.format_exc_info]
    if console:
        # Plain tracebacks: rich's (when installed) print local variables, secrets included.
        renderer: structlog.types.Processor = structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.plain_traceback
        )
        structlog.configure(
            processors=[*shared, *finish, renderer],
            logger_factory=structlog.PrintLoggerFactory(sys.stdout),
            wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
            cache_logger_on_first_use=True,
        )
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json_text)
        structlog.configure(
            processors=[*shared, *finish, structlog.processors.JSONRenderer(serializer=orjson.dumps)],
            logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
            wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
            cache_logger_on_first_use=True,
        )
    _route_standard_logging(level, shared, [*finish, renderer])


def _route_standard_logging(
    level: str, shared: list[structlog.types.Processor], rendering: list[structlog.types.Processor]
) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn(...) becomes a "py.warnings" record, not stderr text
    logging.getLogger("uvicorn.access").disabled = True  # the middleware logs every request itself
    sys.excepthook = _log_uncaught


def _json_text(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("uncaught").critical("uncaught_exception", exc_info=(kind, error, traceback))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
