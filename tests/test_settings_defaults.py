"""Development defaults that are safe to run as they are, and production refusing public secrets."""

from __future__ import annotations

import pytest

from app.core.config import SettingsError, load_settings
from tests.conftest import make_settings
from tests.service_process import ServiceProcess
from tests.support import BASE_ENV, ROOT, process_env

STRONG = "s" * 48
SET_HERE = ("HOST", "PAYMENT_WEBHOOK_SECRET", "ENVIRONMENT", "JWT_SECRET", "DATABASE_URL", "REDIS_URL")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.chdir(ROOT / "tests")  # no .env here
    return monkeypatch


def _settings_from(env: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name in SET_HERE:
        env.delenv(name, raising=False)
    for name, value in {**BASE_ENV, **values}.items():
        env.setenv(name, value)


def test_development_binds_loopback_and_production_all_interfaces(clean_env: pytest.MonkeyPatch) -> None:
    _settings_from(clean_env, {})
    assert load_settings().bind_host == "127.0.0.1"
    _settings_from(clean_env, {"ENVIRONMENT": "production", "JWT_SECRET": STRONG, "PAYMENT_WEBHOOK_SECRET": STRONG})
    assert load_settings().bind_host == "0.0.0.0"
    _settings_from(clean_env, {"HOST": "0.0.0.0"})
    assert load_settings().bind_host == "0.0.0.0"  # an explicit HOST wins (the Dockerfile sets it)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JWT_SECRET": ""}, "JWT_SECRET"),
        ({"ENVIRONMENT": "production", "JWT_SECRET": STRONG}, "PAYMENT_WEBHOOK_SECRET"),
        ({"ENVIRONMENT": "production", "JWT_SECRET": STRONG, "PAYMENT_WEBHOOK_SECRET": ""}, "PAYMENT_WEBHOOK_SECRET"),
        (
            {"ENVIRONMENT": "production", "JWT_SECRET": STRONG, "PAYMENT_WEBHOOK_SECRET": "w" * 31},
            "PAYMENT_WEBHOOK_SECRET",
        ),
    ],
    ids=["empty-jwt-secret", "production-no-webhook-secret", "production-empty-webhook", "production-short-webhook"],
)
def test_unusable_secrets_stop_startup_with_one_line(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], named: str
) -> None:
    _settings_from(clean_env, env)
    with pytest.raises(SettingsError):
        load_settings()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err


def test_production_takes_strong_secrets(clean_env: pytest.MonkeyPatch) -> None:
    _settings_from(clean_env, {"ENVIRONMENT": "production", "JWT_SECRET": STRONG, "PAYMENT_WEBHOOK_SECRET": "w" * 32})
    assert load_settings().payment_webhook_secret.get_secret_value() == "w" * 32


def test_development_secret_is_announced_at_startup(database_url: str, redis_url: str) -> None:
    env = process_env(make_settings(database_url, redis_url))
    del env["JWT_SECRET"]  # the development default
    service = ServiceProcess(env)
    service.start()
    try:
        assert "development_jwt_secret_in_use" in service.log.read_text()
    finally:
        service.stop()
