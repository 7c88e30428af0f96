"""FastAPI dependencies: the runtime, sessions, the signed-in principal, idempotency."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import metrics
from app.core.clock import clock
from app.core.config import RedisFailureMode
from app.core.errors import AppError, ForbiddenError, ServiceUnavailableError, UnauthorizedError
from app.core.logging import get_logger
from app.core.security import Principal, decode_access_token
from app.db.redis import RedisUnavailable
from app.services import idempotency
from app.services.runtime import Runtime

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


async def get_principal(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise UnauthorizedError("A Bearer access token is required")
    principal = decode_access_token(credentials.credentials, runtime.settings)
    await _check_not_revoked(runtime, principal)
    request.scope.setdefault("state", {})["user_id"] = principal.user_id
    return principal


async def _check_not_revoked(runtime: Runtime, principal: Principal) -> None:
    """The auth service's deny list: `revoked:jti:<jti>` and `revoked:user:<id>`."""
    keys = [f"revoked:user:{principal.user_id}"]
    if principal.jti:
        keys.append(f"revoked:jti:{principal.jti}")
    try:
        found = await runtime.redis.call("auth_deny_list", lambda client: client.exists(*keys))
    except RedisUnavailable:
        metrics.AUTH_REVOCATION_UNCHECKED.inc()
        if runtime.settings.auth_redis_failure_mode is RedisFailureMode.DENY:
            raise ServiceUnavailableError("Token revocation cannot be checked right now") from None
        log.warning("token_revocation_unchecked", user_id=principal.user_id)
        return
    if found:
        raise UnauthorizedError("The access token has been revoked", code="token_revoked")


CurrentUser = Annotated[Principal, Depends(get_principal)]


async def require_admin(principal: CurrentUser) -> Principal:
    if not principal.is_admin:
        raise ForbiddenError("This route needs the admin role")
    return principal


AdminUser = Annotated[Principal, Depends(require_admin)]


class IdempotencyGuard:
    """Runs a creating operation at most once per `Idempotency-Key` (SPEC section 4)."""

    def __init__(self, runtime: Runtime, principal: Principal, key: str | None, fingerprint: str) -> None:
        self._runtime = runtime
        self._principal = principal
        self._key = key
        self._fingerprint = fingerprint

    async def run(
        self, operation: Callable[[idempotency.Claim | None], Awaitable[T]], status_code: int = 201
    ) -> T | JSONResponse:
        if not self._key:
            return await operation(None)
        runtime = self._runtime
        ttl = timedelta(hours=runtime.settings.idempotency_ttl_hours)
        outcome = await idempotency.claim(
            runtime.sessionmaker, self._principal.user_id, self._key, self._fingerprint, clock.now(), ttl
        )
        if isinstance(outcome, idempotency.Replay):
            return JSONResponse(outcome.body, status_code=outcome.status_code, headers={"Idempotent-Replayed": "true"})
        try:
            return await operation(outcome)
        except AppError as exc:
            if exc.status_code < 500:
                body: dict[str, Any] = {
                    "code": exc.code,
                    "title": exc.title,
                    "status": exc.status_code,
                    "detail": exc.detail,
                    **exc.extra,
                }
                await idempotency.store(runtime.sessionmaker, outcome, exc.status_code, jsonable_encoder(body))
            else:
                await idempotency.release(runtime.sessionmaker, outcome)
            raise
        except Exception:
            await idempotency.release(runtime.sessionmaker, outcome)
            raise


async def get_idempotency(
    request: Request,
    runtime: RuntimeDep,
    principal: CurrentUser,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="Repeat a POST safely: the first answer is returned again"),
    ] = None,
) -> IdempotencyGuard:
    body = await request.body() if idempotency_key else b""
    fingerprint = idempotency.request_fingerprint(request.method, request.url.path, body)
    return IdempotencyGuard(runtime, principal, idempotency_key, fingerprint)


Idempotency = Annotated[IdempotencyGuard, Depends(get_idempotency)]
