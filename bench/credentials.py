"""What the load generator signs with: the users' and the admin's tokens, and the webhook's signature.

The secrets come from the same settings the service reads (environment, `.env`, Zero), unless
given on the command line. Every token is minted before the load starts, so minting costs nothing
during the run, and encoded once as its `Authorization` header line.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from app.core.config import Settings
from app.core.security import Role, create_access_token
from app.services.payments import sign
from bench.http import bearer

FIRST_USER_ID = 10_000
ADMIN_USER_ID = 1


@dataclass(frozen=True, slots=True)
class Credentials:
    admin: bytes
    users: list[bytes]  # one Authorization line per user, user ids FIRST_USER_ID onwards
    webhook_secret: str

    def webhook_signature(self, body: bytes) -> bytes:
        """The `Evently-Signature` header line the payment provider would send with `body`."""
        return b"Evently-Signature: %s\r\n" % sign(body, self.webhook_secret).encode()


def service_settings(jwt_secret: str | None, webhook_secret: str | None) -> Settings:
    """The service's own settings, with the secrets given on the command line put over them."""
    settings = Settings(database_url="unused", redis_url="unused")
    overrides = {
        name: SecretStr(value)
        for name, value in (("jwt_secret", jwt_secret), ("payment_webhook_secret", webhook_secret))
        if value
    }
    return settings.model_copy(update=overrides)


def mint(settings: Settings, users: int) -> Credentials:
    return Credentials(
        admin=bearer(create_access_token(settings, ADMIN_USER_ID, role=Role.ADMIN)),
        users=[bearer(create_access_token(settings, FIRST_USER_ID + i)) for i in range(users)],
        webhook_secret=settings.payment_webhook_secret.get_secret_value(),
    )
