"""FastAPI dependencies: the runtime, sessions, the signed-in principal, idempotency."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.problems import PROBLEM_JSON, problem_body
from app.core.clock import clock
from app.core.errors import AppError, ForbiddenError, UnauthorizedError
from app.core.logging import get_logger
from app.core.security import Principal
from app.runtime import Runtime
from app.services import admission, idempotency

T = TypeVar("T")
log = get_logger(__name__)
bearer = HTTPBearer(auto_error=False, description="An access token of the platform's auth service")


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_read_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """A session on the replicas (DATABASE_READ_URL), for reads that may lag: admin lists only."""
    async with runtime.read_sessionmaker() as session:
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    # The runtime is read directly (not as a sub-dependency): this runs on every request.
    runtime: Runtime = request.app.state.runtime
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise UnauthorizedError("A Bearer access token is required")
    principal = runtime.tokens.verify(credentials.credentials)
    await runtime.revocations.check(principal)
    request.scope.setdefault("state", {})["user_id"] = principal.user_id
    return principal


CurrentUser = Annotated[Principal, Depends(get_principal)]


async def authenticate(request: Request) -> Principal:
    """`get_principal` called directly (app/api/direct_route.py)."""
    return await get_principal(request, await bearer(request))


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def limit_writes(request: Request, principal: CurrentUser) -> None:
    """Per-user rate limit on write endpoints (`RATE_LIMIT_PER_MINUTE`, off at 0)."""
    if request.method in WRITE_METHODS:
        runtime: Runtime = request.app.state.runtime
        await runtime.rate_limiter.check(principal.user_id)


async def require_admin(principal: CurrentUser) -> Principal:
    if not principal.is_admin:
        raise ForbiddenError("This route needs the admin role")
    return principal


AdminUser = Annotated[Principal, Depends(require_admin)]


class IdempotencyGuard:
    """Runs a creating operation at most once per `Idempotency-Key` (SPEC section 4)."""

    def __init__(self, runtime: Runtime, principal: Principal, key: str | None, fingerprint: str, path: str) -> None:
        self.runtime = runtime
        self.principal = principal
        self._key = key
        self._fingerprint = fingerprint
        self._path = path

    async def run(self, operation: Callable[[idempotency.Claim | None], Awaitable[T]]) -> T | JSONResponse:
        if not self._key:
            return await operation(None)
        runtime = self.runtime
        ttl = timedelta(hours=runtime.settings.idempotency_ttl_hours)
        outcome = await idempotency.claim(
            runtime.sessionmaker, self.principal.user_id, self._key, self._fingerprint, clock.now(), ttl
        )
        if isinstance(outcome, idempotency.Replay):
            media_type = PROBLEM_JSON if outcome.status_code >= 400 else "application/json"
            return JSONResponse(
                outcome.body,
                status_code=outcome.status_code,
                headers={"Idempotent-Replayed": "true"},
                media_type=media_type,
            )
        try:
            return await operation(outcome)
        except AppError as exc:
            if exc.status_code < 500 and exc.replayable:
                body = problem_body(exc.status_code, exc.code, exc.title, exc.detail, self._path, **exc.extra)
                await idempotency.store(runtime.sessionmaker, outcome, exc.status_code, jsonable_encoder(body))
            else:
                await idempotency.release(runtime.sessionmaker, outcome)
            raise
        except Exception:
            await idempotency.release(runtime.sessionmaker, outcome)
            raise


async def get_idempotency(
    request: Request,
    principal: CurrentUser,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="Repeat a POST safely: the first answer is returned again"),
    ] = None,
) -> IdempotencyGuard:
    runtime = request.app.state.runtime
    if not idempotency_key:  # most requests carry no key: nothing to hash
        return IdempotencyGuard(runtime, principal, None, "", "")
    path = request.url.path
    fingerprint = idempotency.request_fingerprint(request.method, path, await request.body())
    return IdempotencyGuard(runtime, principal, idempotency_key, fingerprint, path)


Idempotency = Annotated[IdempotencyGuard, Depends(get_idempotency)]

# A plain header parameter (no dependency to resolve): the service reads the pass only when an
# event's waiting room asks for one.
AdmissionToken = Annotated[
    str | None,
    Header(
        alias=admission.HEADER,
        max_length=2048,
        description="The admission token of the event's waiting room, while it is enabled (`/queue/{event_id}/join`)",
    ),
]
