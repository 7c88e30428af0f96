"""Admission passes of the waiting room.

A pass is a signed token naming the buyer, the event and when the admission ends. Checking one
needs neither Redis nor PostgreSQL, so admissions already given keep working while Redis is down.
It is signed with a key derived from `JWT_SECRET` for this purpose alone and carries
`type: "admission"`, so it is never taken for an access token, nor an access token for it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from jose import JWTError, jwt

from app.core.config import Settings
from app.core.errors import AdmissionRequiredError
from app.models.event_availability import EventAvailability

TOKEN_TYPE = "admission"
HEADER = "X-Admission-Token"


@dataclass(frozen=True, slots=True)
class AdmissionPass:
    user_id: int
    event_id: int
    expires_at: datetime

    def admits(self, user_id: int, event_id: int, now: datetime) -> bool:
        return self.user_id == user_id and self.event_id == event_id and now < self.expires_at


def _signing_key(settings: Settings) -> str:
    secret = settings.jwt_secret.get_secret_value().encode()
    return hmac.new(secret, b"evently-bookings admission pass", hashlib.sha256).hexdigest()


def issue(settings: Settings, admission: AdmissionPass) -> str:
    claims = {
        "type": TOKEN_TYPE,
        "user_id": admission.user_id,
        "event_id": admission.event_id,
        "exp": int(admission.expires_at.timestamp()),
    }
    token: str = jwt.encode(claims, _signing_key(settings), algorithm="HS256")
    return token


def read(settings: Settings, token: str | None) -> AdmissionPass | None:
    """The pass a token carries, or None when it is absent, forged or malformed.

    Expiry is left to `AdmissionPass.admits`, which reads the service's clock.
    """
    if not token:
        return None
    try:
        claims = jwt.decode(
            token,
            _signing_key(settings),
            algorithms=["HS256"],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
        )
    except (JWTError, ValueError, TypeError):
        return None
    user_id, event_id, expiry = (_integer(claims.get(name)) for name in ("user_id", "event_id", "exp"))
    if claims.get("type") != TOKEN_TYPE or user_id is None or event_id is None or expiry is None:
        return None
    try:
        expires_at = datetime.fromtimestamp(expiry, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return AdmissionPass(user_id, event_id, expires_at)


def _integer(value: object) -> int | None:
    return value if type(value) is int else None


def refusal(
    event: EventAvailability, user_id: int, admission: AdmissionPass | None, now: datetime
) -> AdmissionRequiredError | None:
    """The refusal of a request that would take new seats of an event behind its waiting room
    without a live admission of this buyer for this event; None when it may go ahead."""
    if not event.waiting_room_enabled or (admission is not None and admission.admits(user_id, event.event_id, now)):
        return None
    return AdmissionRequiredError(event.event_id)


def require(event: EventAvailability, user_id: int, admission: AdmissionPass | None, now: datetime) -> None:
    error = refusal(event, user_id, admission, now)
    if error is not None:
        raise error
