"""Domain errors: one base class carrying the HTTP status and a stable machine-readable code."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status_code = 500
    code = "internal_error"
    title = "Internal Server Error"
    # Whether an Idempotency-Key's retry gets this refusal again. Not for refusals that the same
    # request, sent again with other headers, can get past.
    replayable = True

    def __init__(
        self,
        detail: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra or {}
        self.headers = headers or {}


class BadRequestError(AppError):
    status_code = 400
    code = "bad_request"
    title = "Bad Request"


class UnauthorizedError(AppError):
    status_code = 401
    code = "not_authenticated"
    title = "Unauthorized"

    def __init__(self, detail: str | None = None, *, code: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})
        if code:
            self.code = code


class ForbiddenError(AppError):
    status_code = 403
    code = "forbidden"
    title = "Forbidden"


class NotFoundError(AppError):
    status_code = 404
    code = "not_found"
    title = "Not Found"


class ConflictError(AppError):
    status_code = 409
    code = "conflict"
    title = "Conflict"


class InsufficientCapacityError(ConflictError):
    code = "insufficient_capacity"
    title = "Not enough seats"

    def __init__(self, available: int) -> None:
        super().__init__(f"Not enough seats available: {available} left", extra={"available": available})


class TicketLimitExceededError(ConflictError):
    code = "ticket_limit_exceeded"
    title = "Ticket limit reached"

    def __init__(self, limit: int, held: int) -> None:
        super().__init__(
            f"At most {limit} seats per buyer for this event; you already have {held}",
            extra={"limit": limit, "held": held},
        )


class SalesClosedError(ConflictError):
    code = "sales_closed"
    title = "Sales closed"


class InvalidTransitionError(ConflictError):
    title = "Transition not allowed"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class VersionConflictError(ConflictError):
    code = "version_conflict"
    title = "Concurrent update"


class IdempotencyInProgressError(ConflictError):
    code = "idempotency_in_progress"
    title = "Request in progress"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed",
            headers={"Retry-After": "1"},
        )


class IdempotencyMismatchError(AppError):
    status_code = 422
    code = "idempotency_key_reused"
    title = "Idempotency-Key reused"


class RateLimitedError(AppError):
    status_code = 429
    code = "rate_limited"
    title = "Too Many Requests"


class ServiceUnavailableError(AppError):
    status_code = 503
    code = "service_unavailable"
    title = "Service Unavailable"


class AdmissionRequiredError(ForbiddenError):
    code = "admission_required"
    title = "Admission required"
    replayable = False  # the same body with an admission token must go through

    def __init__(self, event_id: int) -> None:
        join_url = f"/api/v1/queue/{event_id}/join"
        super().__init__(
            f"Event {event_id} sells through its waiting room: join it at {join_url} and send the "
            "admission token you are given as X-Admission-Token",
            extra={"event_id": event_id, "join_url": join_url},
        )
