"""Verification of the platform's access tokens."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from jose import jwk, jws, jwt
from jose.backends.base import Key
from jose.exceptions import JOSEError
from pydantic import SecretStr

from app.core.config import Settings
from app.core.errors import InvalidTokenError


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    role: Role
    email: str | None = None
    jti: str | None = None
    expires_at: float | None = None  # the token's `exp`, Unix seconds

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.user_id}"


class TokenVerifier:
    """Verifies tokens, remembering verified signatures (expiry is checked on every use)."""

    def __init__(self, settings: Settings, max_entries: int = 10_000) -> None:
        self._algorithms = [settings.jwt_algorithm]
        # Made once: given the secret as text, jose would try it as JSON and build a key per token.
        self._key = jwk.construct(settings.jwt_secret.get_secret_value(), settings.jwt_algorithm)
        self._max_entries = max_entries
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires = cached
            if expires > time.time():
                return principal
            del self._verified[token]
            raise InvalidTokenError("The access token is invalid or expired")
        principal, expires = _decode(token, self._key, self._algorithms)
        principal = replace(principal, expires_at=expires)
        if len(self._verified) >= self._max_entries:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal


# 9999-12-31T23:59:59Z: a later time cannot be a datetime, so no real token carries one.
MAX_NUMERIC_DATE = 253_402_300_799
# How far the auth service's clock may run ahead of ours (`iat`, `nbf`).
CLOCK_SKEW_SECONDS = 60
MAX_USER_ID = 2**63 - 1  # a PostgreSQL bigint
USER_ID_DIGITS = re.compile(r"[0-9]{1,19}")


def _decode(token: str, key: Key, algorithms: list[str]) -> tuple[Principal, float]:
    """Verify signature, algorithm and claims; the principal and the token's expiry."""
    try:
        # The signature and the algorithm, by python-jose. Not its claim checks: its time checks
        # call int() on any JSON value (null, a list, Infinity) and raise what they do not catch;
        # the claims are checked strictly here instead, its other checks included.
        claims = json.loads(jws.verify(token, key, algorithms))
    except (JOSEError, ValueError, RecursionError) as exc:  # a deeply nested header or payload overflows json
        raise InvalidTokenError("The access token is invalid or expired") from exc
    if not isinstance(claims, dict) or not _identifiers_readable(claims):
        raise InvalidTokenError("The access token is invalid or expired")
    if claims.get("type", "access") != "access":
        raise InvalidTokenError("Only access tokens are accepted")
    expires = _check_times(claims, time.time())
    principal = Principal(
        user_id=_user_id(claims),
        role=_role(claims),
        email=claims.get("email") if isinstance(claims.get("email"), str) else None,
        jti=claims.get("jti") if isinstance(claims.get("jti"), str) else None,
    )
    return principal, expires


def _identifiers_readable(claims: dict[str, Any]) -> bool:
    """What python-jose's own checks refuse, besides times: a `sub` or `jti` that is not a string
    (RFC 7519), and an `at_hash`, an ID token's, which cannot be checked without its access token."""
    strings = all(isinstance(claims[name], str) for name in ("sub", "jti") if name in claims)
    return strings and "at_hash" not in claims


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim: absent, or a finite JSON number up to the year 9999."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_NUMERIC_DATE:
        raise InvalidTokenError(f"The token's {name} claim is not a valid time")
    return float(value)


def _check_times(claims: dict[str, Any], now: float) -> float:
    """`exp` is required and in the future; `nbf` passed and `iat` not ahead (within the clock skew)."""
    expires = _numeric_date(claims, "exp")
    not_before = _numeric_date(claims, "nbf")
    issued = _numeric_date(claims, "iat")
    if expires is None or expires <= now:
        raise InvalidTokenError("The access token is invalid or expired")
    if not_before is not None and not_before > now + CLOCK_SKEW_SECONDS:
        raise InvalidTokenError("The access token is not valid yet")
    if issued is not None and issued > now + CLOCK_SKEW_SECONDS:
        raise InvalidTokenError("The access token was issued in the future")
    return expires


def _user_id(claims: dict[str, Any]) -> int:
    """`user_id` (or `sub`): a positive integer that fits a bigint, as a JSON integer or ASCII digits."""
    raw = claims.get("user_id", claims.get("sub"))
    user_id = 0
    if isinstance(raw, int) and not isinstance(raw, bool):
        user_id = raw
    elif isinstance(raw, str) and USER_ID_DIGITS.fullmatch(raw):
        user_id = int(raw)
    if not 0 < user_id <= MAX_USER_ID:
        raise InvalidTokenError("The token names no valid user")
    return user_id


def _role(claims: dict[str, Any]) -> Role:
    try:
        return Role(claims.get("role", Role.USER.value))
    except ValueError as exc:
        raise InvalidTokenError("The token carries an unknown role") from exc


class SigningSettings(Protocol):
    """What issuing a token needs: the service's Settings, or the tools' (no database or Redis)."""

    @property
    def jwt_secret(self) -> SecretStr: ...
    @property
    def jwt_algorithm(self) -> str: ...
    @property
    def jwt_expiry_minutes(self) -> int: ...


def create_access_token(
    settings: SigningSettings,
    user_id: int,
    *,
    role: Role = Role.USER,
    email: str | None = None,
    expires_in: timedelta | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Issue a token shaped like the auth service's (used by tests, benchmarks and tooling)."""
    expiry = datetime.now(UTC) + (expires_in or timedelta(minutes=settings.jwt_expiry_minutes))
    claims: dict[str, Any] = {
        "user_id": user_id,
        "email": email or f"user{user_id}@example.com",
        "role": role.value,
        "type": "access",
        "exp": int(expiry.timestamp()),
    }
    claims.update(extra or {})
    encoded: str = jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=settings.jwt_algorithm)
    return encoded
