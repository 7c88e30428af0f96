"""What routes answer: the problems they declare (RFC 9457, `application/problem+json`), the
headers that come with an answer, and rendered models.

Each router keeps one table, `PROBLEMS`, of the problems each of its operations can answer, built
here from the errors its service functions raise; the document then lists each status's codes in
its description and shows one example per code.
"""

from __future__ import annotations

import http
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Response
from pydantic import BaseModel

from app.api.problems import PROBLEM_JSON, problem_body
from app.core.errors import (
    AdmissionRequiredError,
    AppError,
    BadRequestError,
    DatabaseUnavailableError,
    ForbiddenError,
    IdempotencyInProgressError,
    IdempotencyMismatchError,
    InternalError,
    InvalidTokenError,
    LockTimeoutError,
    PayloadTooLargeError,
    RateLimitedError,
    RedisBusyError,
    ServiceUnavailableError,
    TicketLimitExceededError,
    TokenRevokedError,
    UnauthorizedError,
    ValidationFailedError,
    VersionConflictError,
)

PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}
REQUEST_ID = {"$ref": "#/components/headers/X-Request-ID"}
RETRY_AFTER = {"$ref": "#/components/headers/Retry-After"}
REPLAYED = {"$ref": "#/components/headers/Idempotent-Replayed"}
REPLAYABLE_STATUSES = frozenset({400, 404, 409, 422})  # a stored refusal is answered again to a repeat


@dataclass(frozen=True, slots=True)
class Answer:
    """One problem an operation can answer: its status, its `code` and its title, from its class."""

    error: type[AppError]

    @classmethod
    def of(cls, error: type[AppError]) -> Answer:
        return cls(error)

    @property
    def status(self) -> int:
        return self.error.status_code

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def title(self) -> str:
        return self.error.title

    def example(self) -> dict[str, Any]:
        body = problem_body(self.status, self.code, self.title, self.title, instance=None)
        return {"summary": self.code, "value": body}


INTERNAL_ERROR = Answer.of(InternalError)
DATABASE_UNAVAILABLE = Answer.of(DatabaseUnavailableError)
# Any route: a bug, or the database out of reach.
ANY = (INTERNAL_ERROR, DATABASE_UNAVAILABLE)
# A route behind the bearer token (app/api/deps.py get_principal, app/services/revocation.py).
AUTHENTICATED = (
    *ANY,
    Answer.of(UnauthorizedError),
    Answer.of(InvalidTokenError),
    Answer.of(TokenRevokedError),
    Answer.of(ServiceUnavailableError),
    Answer.of(RedisBusyError),
)
ADMIN = (*AUTHENTICATED, Answer.of(ForbiddenError))
# Path, query or header parameters, or a body, that FastAPI validates.
VALIDATED = (Answer.of(ValidationFailedError),)
PAYLOAD_TOO_LARGE = Answer.of(PayloadTooLargeError)  # MAX_BODY_BYTES
# A JSON body: unreadable, too large, or invalid.
BODY = (*VALIDATED, Answer.of(BadRequestError), PAYLOAD_TOO_LARGE)
# A POST, PUT or DELETE of a user: the per-user rate limit (RATE_LIMIT_PER_MINUTE).
WRITE = (Answer.of(RateLimitedError),)
# An operation that takes `Idempotency-Key` (app/services/idempotency.py).
IDEMPOTENT = (Answer.of(IdempotencyInProgressError), Answer.of(IdempotencyMismatchError))
# A change under the event's lock (app/services/unit_of_work.py Transactions.locked, app/db/lock.py).
LOCKED = (Answer.of(VersionConflictError), Answer.of(LockTimeoutError))
TOO_MANY = Answer.of(BadRequestError)  # quantity above MAX_TICKETS_PER_BOOKING
# New seats of an event: its waiting room and its per-buyer limit (app/services/admission.py, buyer_limit.py).
FAIR_SALE = (Answer.of(AdmissionRequiredError), Answer.of(TicketLimitExceededError))


def problems(*answers: Answer | Iterable[Answer]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for the given problems: one per status, listing its codes."""
    by_status: dict[int, dict[str, Answer]] = {}
    for item in answers:
        for answer in (item,) if isinstance(item, Answer) else item:
            by_status.setdefault(answer.status, {})[answer.code] = answer
    replayable = any(a.error is IdempotencyMismatchError for a in by_status.get(422, {}).values())
    return {
        status: _problem_response(status, list(codes.values()), replayable)
        for status, codes in sorted(by_status.items())
    }


def _problem_response(status: int, answers: list[Answer], replayable: bool) -> dict[str, Any]:
    codes = ", ".join(f"`{a.code}`" for a in answers)
    headers: dict[str, Any] = {"X-Request-ID": REQUEST_ID}
    if status in (429, 503) or any(a.error is IdempotencyInProgressError for a in answers):
        headers["Retry-After"] = RETRY_AFTER
    if replayable and status in REPLAYABLE_STATUSES:
        headers["Idempotent-Replayed"] = REPLAYED
    return {
        "description": f"{http.HTTPStatus(status).phrase}: {codes}",
        "headers": headers,
        "content": {
            PROBLEM_JSON: {"schema": PROBLEM_SCHEMA, "examples": {a.code: a.example() for a in answers}},
        },
    }


def success(description: str, *, replayable: bool = False, located: bool = False) -> dict[str, Any]:
    """A success answer's description and headers besides X-Request-ID (added to every answer)."""
    headers: dict[str, Any] = {}
    if replayable:
        headers["Idempotent-Replayed"] = REPLAYED
    if located:
        headers["Location"] = {"$ref": "#/components/headers/Location"}
    return {"description": description, "headers": headers} if headers else {"description": description}


def located(response: Response, collection: str) -> Response:
    """A 201 names what it created in `Location`; the id is read from the answer, a replay's too."""
    if response.status_code == 201:
        response.headers["Location"] = f"{collection}/{orjson.loads(response.body)['id']}"
    return response


def rendered(result: BaseModel | Response, status_code: int) -> Response:
    """A model rendered to JSON once; returned as a model, FastAPI would validate it again first."""
    if isinstance(result, Response):
        return result  # an idempotent replay, already rendered
    return Response(result.model_dump_json(), status_code=status_code, media_type="application/json")
