"""The error catalogue: every problem the service answers is a class here, with its HTTP status, its
stable machine-readable `code` and its title.

A class that declares `code` is a code of the catalogue (`catalogue()`); a class that declares no
code of its own is either a family (`ConflictError`, `InvalidTransitionError`: never raised as is)
or a variant of its parent's code with other headers (`TooManyStreamsError`). The problem renderer
(app/api/problems.py), the OpenAPI tables (app/api/v1/responses.py) and the README's list of codes
(checked by tests/test_error_catalogue.py) all derive from these classes.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    status_code: ClassVar[int]
    code: ClassVar[str]
    title: ClassVar[str]
    # Whether an Idempotency-Key's retry gets this refusal again. Not for refusals that the same
    # request, sent again with other headers, can get past.
    replayable: ClassVar[bool] = True

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


def catalogue() -> list[type[AppError]]:
    """Every code: each class that declares one, in definition order of their families."""
    found: list[type[AppError]] = []
    pending: list[type[AppError]] = [AppError]
    while pending:
        cls = pending.pop(0)
        if "code" in vars(cls):
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


# 400


class BadRequestError(AppError):
    status_code = 400
    code = "bad_request"
    title = "Bad Request"


# 401


class UnauthorizedError(AppError):
    status_code = 401
    code = "not_authenticated"
    title = "Unauthorized"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class InvalidTokenError(UnauthorizedError):
    code = "invalid_token"


class TokenRevokedError(UnauthorizedError):
    code = "token_revoked"


class InvalidSignatureError(UnauthorizedError):
    """A payment webhook whose `Evently-Signature` does not vouch for its body (no bearer token here)."""

    code = "invalid_signature"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.headers = {}


class StaleSignatureError(InvalidSignatureError):
    code = "stale_signature"


# 403


class ForbiddenError(AppError):
    status_code = 403
    code = "forbidden"
    title = "Forbidden"


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


# 404, 405, 408, 413, 431: also answered by the framework and the server (app/api/problems.py, request_heads.py)


class NotFoundError(AppError):
    status_code = 404
    code = "not_found"
    title = "Not Found"


class MethodNotAllowedError(AppError):
    status_code = 405
    code = "method_not_allowed"
    title = "Method Not Allowed"


class RequestTimeoutError(AppError):
    status_code = 408
    code = "request_timeout"
    title = "Request Timeout"


class PayloadTooLargeError(AppError):
    status_code = 413
    code = "payload_too_large"
    title = "Payload Too Large"


class HeaderFieldsTooLargeError(AppError):
    status_code = 431
    code = "request_header_fields_too_large"
    title = "Request Header Fields Too Large"


# 409


class ConflictError(AppError):
    """The family of refusals because of the current state; each has a code of its own."""

    status_code = 409
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


class SeatsAvailableError(ConflictError):
    code = "seats_available"
    title = "Seats are available"


class AlreadyWaitlistedError(ConflictError):
    code = "already_waitlisted"
    title = "Already on the waitlist"


class CapacityBelowHeldError(ConflictError):
    code = "capacity_below_held"
    title = "Capacity below seats held"


class VersionConflictError(ConflictError):
    code = "version_conflict"
    title = "Concurrent update"
    replayable = False  # "please retry": a retry with the same Idempotency-Key must run again


class IdempotencyInProgressError(ConflictError):
    code = "idempotency_in_progress"
    title = "Request in progress"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed",
            headers={"Retry-After": "1"},
        )


class InvalidTransitionError(ConflictError):
    """The family of status changes the entity's current status does not allow."""

    title = "Transition not allowed"


class BookingNotCancellableError(InvalidTransitionError):
    code = "booking_not_cancellable"


class BookingNotConfirmableError(InvalidTransitionError):
    code = "booking_not_confirmable"


class BookingNotRefundableError(InvalidTransitionError):
    code = "booking_not_refundable"


class BookingNotCompletableError(InvalidTransitionError):
    code = "booking_not_completable"  # the sweeper's own change: logged, never answered


class BookingNotExpirableError(InvalidTransitionError):
    code = "booking_not_expirable"  # the sweeper's own change: logged, never answered


class BookingNotPayableError(InvalidTransitionError):
    code = "booking_not_payable"


class PaymentInProgressError(InvalidTransitionError):
    code = "payment_in_progress"


class ReservationNotActiveError(InvalidTransitionError):
    code = "reservation_not_active"


class OfferNotAvailableError(InvalidTransitionError):
    code = "offer_not_available"
    title = "No live offer"


class WaitlistNotCancellableError(InvalidTransitionError):
    code = "waitlist_not_cancellable"


# 422


class ValidationFailedError(AppError):
    status_code = 422
    code = "validation_error"
    title = "Unprocessable Content"


class UnstorableValueError(AppError):
    """A value of this request that PostgreSQL refused (SQLSTATE class 22, or not encodable)."""

    status_code = 422
    code = "invalid_value"
    title = "Unprocessable Content"


class IdempotencyMismatchError(AppError):
    status_code = 422
    code = "idempotency_key_reused"
    title = "Idempotency-Key reused"


class AmountMismatchError(AppError):
    status_code = 422
    code = "amount_mismatch"
    title = "Amount or currency differs from the booking's"


class AmountOutOfRangeError(AppError):
    status_code = 422
    code = "amount_out_of_range"
    title = "Amount too large"


# 429


class RateLimitedError(AppError):
    status_code = 429
    code = "rate_limited"
    title = "Too Many Requests"


class TooManyStreamsError(RateLimitedError):
    """`rate_limited` for a live stream refused: at the user's or the instance's limit."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


# 500


class InternalError(AppError):
    status_code = 500
    code = "internal_error"
    title = "Internal Server Error"


# 503


class ServiceUnavailableError(AppError):
    status_code = 503
    code = "service_unavailable"
    title = "Service Unavailable"


class DatabaseUnavailableError(ServiceUnavailableError):
    code = "database_unavailable"


class LockTimeoutError(ServiceUnavailableError):
    code = "lock_timeout"
    title = "Event busy"

    def __init__(self, event_id: int) -> None:
        super().__init__(f"Event {event_id} is busy, try again shortly", headers={"Retry-After": "1"})


class RedisBusyError(ServiceUnavailableError):
    """A check that needs Redis could not get a connection in time; the client should retry soon."""

    code = "service_busy"
    title = "Service busy"

    def __init__(self) -> None:
        super().__init__("Too many requests at once; try again shortly", headers={"Retry-After": "1"})
