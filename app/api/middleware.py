"""Request id, access log and HTTP metrics, as one plain ASGI middleware (cheap per request)."""

from __future__ import annotations

import functools
import re
import time
import uuid

import structlog
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import PROBLEM_JSON, error_body
from app.core import metrics
from app.core.errors import PayloadTooLargeError
from app.core.logging import get_logger

log = get_logger("access")
REQUEST_ID_HEADER = b"x-request-id"
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            if _declared_length(scope) > self.max_body_bytes:
                await _too_large(self.max_body_bytes)(scope, receive, send_with_id)
            else:
                await self.app(scope, _limited(receive, self.max_body_bytes), send_with_id)
        finally:
            self._account(scope, status, time.perf_counter() - started)

    @staticmethod
    def _account(scope: Scope, status: int, duration: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"]
        count, latency = _http_series(method, route, status)
        count.inc()
        latency.observe(duration)
        user_id = scope.get("state", {}).get("user_id")
        log.info(
            "request",
            method=method,
            route=route,
            path=scope["path"],
            status=status,
            duration_ms=round(duration * 1000, 2),
            user_id=user_id,
        )


@functools.cache
def _http_series(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    """The labelled metric children of a (method, route, status): looked up once, not per request."""
    return metrics.HTTP_REQUESTS.labels(method, route, str(status)), metrics.HTTP_LATENCY.labels(method, route)


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _limited(receive: Receive, limit: int) -> Receive:
    """Count the bytes of a body sent without a Content-Length, and stop past the limit."""
    received = 0

    async def counting_receive() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            # An HTTPException, not an AppError: FastAPI passes it on while reading the body
            # (other errors there become 400 "error parsing the body").
            raise HTTPException(413, f"The request body is larger than {limit} bytes")
        return message

    return counting_receive


def _too_large(limit: int) -> JSONResponse:
    detail = f"The request body is larger than {limit} bytes"
    body = error_body(PayloadTooLargeError, detail, instance=None)
    return JSONResponse(body, status_code=PayloadTooLargeError.status_code, media_type=PROBLEM_JSON)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            candidate: str = value.decode("latin-1")
            if VALID_REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex
