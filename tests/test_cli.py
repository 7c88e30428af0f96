"""The development commands: `python -m app.cli token|webhook`, against a real service process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.core.config import DEVELOPMENT_WEBHOOK_SECRET, Environment, Settings
from app.core.security import Role, TokenVerifier
from tests.conftest import ROOT, TEST_JWT_SECRET
from tests.service_process import ServiceProcess
from tests.support import process_env

# No database, no Redis, no webhook secret: what a newcomer's shell has.
TOOL_ENV_DROPPED = ("DATABASE_URL", "DB_HOST", "REDIS_URL", "REDIS_HOST", "PAYMENT_WEBHOOK_SECRET", "JWT_SECRET")


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {name: value for name, value in os.environ.items() if name not in TOOL_ENV_DROPPED}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=cwd,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def verified(settings: Settings, token: str) -> tuple[int, Role]:
    principal = TokenVerifier(settings).verify(token)
    return principal.user_id, principal.role


def test_token_needs_no_database_and_reads_dotenv(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"JWT_SECRET={TEST_JWT_SECRET}\n")
    admin = run_cli("token", "--user", "7", "--admin", "--minutes", "5", cwd=tmp_path)
    assert admin.returncode == 0, admin.stderr
    assert verified(settings, admin.stdout.strip()) == (7, Role.ADMIN)
    user = run_cli("token", cwd=tmp_path)
    assert verified(settings, user.stdout.strip()) == (1, Role.USER)


def test_bad_tool_setting_is_one_line(tmp_path: Path) -> None:
    refused = run_cli("token", cwd=tmp_path, JWT_EXPIRY_MINUTES="0")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()] and "JWT_EXPIRY_MINUTES" in refused.stderr


def test_development_has_a_webhook_secret_production_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PAYMENT_WEBHOOK_SECRET", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    urls = {"database_url": "postgresql://u@db/x", "redis_url": "redis://cache:6379/0"}
    development = Settings(_env_file=None, **urls)  # type: ignore[call-arg]
    assert development.payment_webhook_secret.get_secret_value() == DEVELOPMENT_WEBHOOK_SECRET
    try:
        production = Settings(
            _env_file=None,  # type: ignore[call-arg]
            environment=Environment.PRODUCTION,
            jwt_secret="p" * 48,
            **urls,
        )
    except ValidationError:
        return  # refused outright: as good
    assert production.payment_webhook_secret.get_secret_value() != DEVELOPMENT_WEBHOOK_SECRET


async def test_book_pay_and_webhook_with_the_commands(settings: Settings, tmp_path: Path) -> None:
    """The Quick start's path: tokens from `token`, the payment confirmed by `webhook`, with the
    development webhook secret on both sides (none configured)."""
    env = {**process_env(settings), "ENVIRONMENT": "development"}
    service = ServiceProcess(env)
    service._env.pop("PAYMENT_WEBHOOK_SECRET", None)
    service.start()
    tool_env = {"JWT_SECRET": TEST_JWT_SECRET, "PORT": str(service.port)}
    try:
        admin = run_cli("token", "--admin", cwd=tmp_path, **tool_env).stdout.strip()
        user = run_cli("token", "--user", "42", cwd=tmp_path, **tool_env).stdout.strip()
        async with httpx.AsyncClient(base_url=service.url, timeout=20) as client:
            event = {"event_name": "Gig", "total_capacity": 10, "price": "25.00", "currency": "EUR"}
            as_admin = {"Authorization": f"Bearer {admin}"}
            as_user = {"Authorization": f"Bearer {user}"}
            assert (await client.put("/api/v1/admin/availability/1", json=event, headers=as_admin)).status_code == 200
            booked = await client.post("/api/v1/bookings/", json={"event_id": 1, "quantity": 2}, headers=as_user)
            booking = booked.json()
            intent = await client.post(
                f"/api/v1/bookings/{booking['id']}/payment", json={"payment_method": "card"}, headers=as_user
            )
            assert intent.status_code == 201, intent.text
            sent = run_cli("webhook", intent.json()["payment_reference"], "succeeded", cwd=tmp_path, **tool_env)
            assert sent.returncode == 0, sent.stderr
            assert json.loads(sent.stdout)["status"] == "confirmed"
            after = await client.get(f"/api/v1/bookings/{booking['id']}", headers=as_user)
            assert after.json()["status"] == "confirmed" and after.json()["payment_status"] == "completed"
            refused = ("webhook", "PAY-UNKNOWN", "failed", "--amount", "1", "--currency", "EUR")
            unknown = run_cli(*refused, cwd=tmp_path, **tool_env)
            assert unknown.returncode == 1 and "404" in unknown.stderr and "Traceback" not in unknown.stderr
    finally:
        service.stop()
