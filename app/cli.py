"""Development commands: `python -m app.cli token ...` and `python -m app.cli webhook ...` (`--help`).

`token` prints an access token the service accepts; `webhook` signs and sends the payment provider's
callback for a booking being paid. Both read the service's own settings (environment, `.env`,
Zero) but only the few they need, so neither needs a database or Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from app.core.config import (
    Environment,
    Settings,
    SettingsError,
    describe_validation_error,
    webhook_secret_for,
)
from app.core.security import Role, create_access_token
from app.core.zero_source import ZeroUnavailableError
from app.services.payments import sign

BANNER_TOKEN_MINUTES = 8 * 60
WEBHOOK_PATH = "/api/v1/payments/webhook"
ADMIN_BOOKINGS_PATH = "/api/v1/admin/bookings/"
PAGE_SIZE = 100


def _as_service(name: str) -> Any:
    """The service's own field (type, default, bounds), so the tools cannot drift from it."""
    return Settings.model_fields[name]


class ToolSettings(BaseSettings):
    """The settings the commands need, from the same sources and with the same defaults as the service's."""

    model_config = Settings.model_config

    environment: Environment = _as_service("environment")
    host: str | None = _as_service("host")
    log_level: str = _as_service("log_level")
    port: int = _as_service("port")
    jwt_secret: SecretStr = _as_service("jwt_secret")
    jwt_algorithm: str = _as_service("jwt_algorithm")
    jwt_expiry_minutes: int = _as_service("jwt_expiry_minutes")
    payment_webhook_secret: SecretStr = _as_service("payment_webhook_secret")
    database_url: str | None = _as_service("database_url")
    db_host: str | None = _as_service("db_host")
    redis_url: str | None = _as_service("redis_url")
    redis_host: str | None = _as_service("redis_host")
    embedded_data_dir: Path = Path(".data")  # make run's alone: where its embedded servers keep their data

    @model_validator(mode="after")
    def _development_webhook_secret(self) -> ToolSettings:
        self.payment_webhook_secret = webhook_secret_for(self.environment, self.payment_webhook_secret)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return Settings.settings_customise_sources(
            settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        )

    @property
    def local_url(self) -> str:
        """The service's base URL as reached from this machine."""
        host = "127.0.0.1" if self.host in (None, "0.0.0.0", "::", "") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"


def load_tool_settings() -> ToolSettings:
    """Like `load_settings`: one line naming what is wrong, exit status 2."""
    try:
        return ToolSettings()
    except ValidationError as exc:
        line = f"invalid settings: {describe_validation_error(exc)}"
    except ZeroUnavailableError as exc:
        line = f"invalid settings: could not fetch secrets from Zero: {exc}"
    print(line, file=sys.stderr)
    raise SettingsError(2)


def mint_token(settings: ToolSettings, user_id: int, *, admin: bool = False, minutes: int | None = None) -> str:
    expires_in = timedelta(minutes=minutes) if minutes else None
    return create_access_token(settings, user_id, role=Role.ADMIN if admin else Role.USER, expires_in=expires_in)


class CommandError(Exception):
    """A command that could not do its work; the message is printed as it is."""


def _request(url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CommandError(f"{exc.code} from {url}: {exc.read().decode(errors='replace')}") from exc
    except urllib.error.URLError as exc:
        raise CommandError(f"could not reach {url} ({exc.reason}): is the service running (make run)?") from exc


def find_payment(settings: ToolSettings, base_url: str, reference: str) -> tuple[Decimal, str]:
    """The amount and currency of the booking being paid under `reference`, asked as an admin."""
    token = mint_token(settings, 1, admin=True, minutes=5)
    offset = 0
    while True:
        query = urllib.parse.urlencode({"payment_status": "processing", "limit": PAGE_SIZE, "offset": offset})
        page = _request(f"{base_url}{ADMIN_BOOKINGS_PATH}?{query}", headers={"Authorization": f"Bearer {token}"})
        for booking in page["items"]:
            if booking["payment_reference"] == reference:
                return Decimal(booking["total_amount"]), str(booking["currency"])
        offset += PAGE_SIZE
        if offset >= page["total"]:
            raise CommandError(f"no booking is being paid under {reference} (--amount and --currency send anyway)")


def send_webhook(
    settings: ToolSettings, base_url: str, reference: str, outcome: str, amount: Decimal, currency: str
) -> Any:
    payload = {"payment_reference": reference, "outcome": outcome, "amount": str(amount), "currency": currency}
    body = json.dumps(payload).encode()
    signature = sign(body, settings.payment_webhook_secret.get_secret_value())
    headers = {"Content-Type": "application/json", "Evently-Signature": signature}
    return _request(f"{base_url}{WEBHOOK_PATH}", body=body, headers=headers)


def _token(args: argparse.Namespace) -> None:
    print(mint_token(load_tool_settings(), args.user, admin=args.admin, minutes=args.minutes))


def _webhook(args: argparse.Namespace) -> None:
    settings = load_tool_settings()
    base_url = (args.url or settings.local_url).rstrip("/")
    if args.amount is not None and args.currency:
        amount, currency = args.amount, args.currency
    else:
        amount, currency = find_payment(settings, base_url, args.payment_reference)
    answer = send_webhook(settings, base_url, args.payment_reference, args.outcome, amount, currency)
    print(json.dumps(answer))


def shown_path(path: str) -> str:
    """Relative to the working directory when inside it: shorter to read and to copy."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def banner(settings: ToolSettings, psql_command: str | None = None) -> str:
    """What `make run` prints once the service answers: where to look, and tokens to try it with."""
    lines = ["", f"Evently bookings is ready: {settings.local_url}/docs"]
    if settings.environment is Environment.DEVELOPMENT:
        python = shown_path(sys.executable)
        hours = BANNER_TOKEN_MINUTES // 60
        user = mint_token(settings, 1, minutes=BANNER_TOKEN_MINUTES)
        admin = mint_token(settings, 1, admin=True, minutes=BANNER_TOKEN_MINUTES)
        lines += [
            f"  user token (user 1, {hours} h):   {user}",
            f"  admin token (user 1, {hours} h):  {admin}",
            '  more tokens:    make -s token ARGS="--user 7"   (--admin for an admin)',
            f"  pay a booking:  {python} -m app.cli webhook <payment_reference> succeeded",
        ]
    if psql_command:
        lines.append(f"  psql:           {psql_command}")
    lines += ["  Ctrl-C stops it all.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="print an access token (JWT_SECRET from the service's settings)")
    token.add_argument("--user", type=int, default=1, help="user id (default 1)")
    token.add_argument("--admin", action="store_true", help="an admin token")
    token.add_argument("--minutes", type=int, default=None, help="lifetime (default JWT_EXPIRY_MINUTES)")
    token.set_defaults(run=_token)
    webhook = commands.add_parser("webhook", help="sign and send the payment provider's webhook to the service")
    webhook.add_argument("payment_reference", help="from POST /api/v1/bookings/{id}/payment")
    webhook.add_argument("outcome", choices=["succeeded", "failed"])
    webhook.add_argument("--amount", type=Decimal, help="default: the booking's, asked of the service as an admin")
    webhook.add_argument("--currency", help="default: the booking's")
    webhook.add_argument("--url", help="the service's base URL (default http://127.0.0.1:PORT)")
    webhook.set_defaults(run=_webhook)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
