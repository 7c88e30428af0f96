"""One handler per kind of failure, all rendering RFC 9457 problem details with a `code`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import (
    AppError,
    BadRequestError,
    DatabaseUnavailableError,
    ForbiddenError,
    InternalError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    UnauthorizedError,
    UnstorableValueError,
    ValidationFailedError,
)
from app.core.logging import get_logger

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
# The statuses the framework raises as an HTTPException (routing, body parsing, the body limit), by class.
HTTP_ERRORS: dict[int, type[AppError]] = {
    error.status_code: error
    for error in (
        BadRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        MethodNotAllowedError,
        PayloadTooLargeError,
        ValidationFailedError,
        RateLimitedError,
    )
}


def problem_body(status: int, code: str, title: str, detail: str, instance: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"https://errors.evently.dev/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return body


def error_body(error: type[AppError], detail: str, instance: str | None, **extra: Any) -> dict[str, Any]:
    return problem_body(error.status_code, error.code, error.title, detail, instance, **extra)


def problem(
    error: type[AppError],
    detail: str,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = error_body(error, detail, request.url.path if request else None, **extra)
    return JSONResponse(body, status_code=error.status_code, headers=headers, media_type=PROBLEM_JSON)


async def app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem(type(exc), exc.detail, request, exc.headers, **exc.extra)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ())),
            "message": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]
    fields = ", ".join(e["field"] for e in errors) or "request"
    return problem(ValidationFailedError, f"Invalid input: {fields}", request, errors=errors)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error = HTTP_ERRORS.get(exc.status_code)
    if error is None:  # no part of the service raises another status; should one, it is a bug
        log.error("unexpected_http_status", status=exc.status_code)
        return await unhandled(request, exc)
    detail = exc.detail if isinstance(exc.detail, str) else error.title
    if error is NotFoundError and detail == "Not Found":
        detail = f"No route matches {request.method} {request.url.path}"
    return problem(error, detail, request, dict(exc.headers or {}))


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database_unavailable", error_type=type(exc).__name__)
    return problem(
        DatabaseUnavailableError, "The database is unavailable; please retry shortly", request, {"Retry-After": "2"}
    )


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """A value PostgreSQL cannot take (SQLSTATE class 22, e.g. a NUL in a query filter) is the
    client's mistake; a lost connection is 503; anything else is a bug."""
    assert isinstance(exc, DBAPIError)
    if _is_connection_failure(exc):
        return await database_unavailable(request, exc)
    if str(getattr(exc.orig, "sqlstate", "") or "").startswith("22"):
        log.warning("database_rejected_value", sqlstate=getattr(exc.orig, "sqlstate", None))
        return problem(UnstorableValueError, "A value in the request cannot be stored", request)
    return await unhandled(request, exc)


async def unhandled(request: Request, exc: Exception) -> JSONResponse:
    if _is_connection_failure(exc):
        return await database_unavailable(request, exc)
    log.exception("unhandled_error", error_type=type(exc).__name__)
    return problem(InternalError, "An unexpected error occurred", request)


def _is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeoutError, ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def register(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for db_error in (OperationalError, InterfaceError, PoolTimeoutError, ConnectionRefusedError):
        app.add_exception_handler(db_error, database_unavailable)
    app.add_exception_handler(DBAPIError, database_error)
    app.add_exception_handler(Exception, unhandled)
