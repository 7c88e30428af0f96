"""Settings: parsing, the clear start-up error, and the Zero source against a local stub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Environment, Settings, SettingsError, load_settings
from tests.support import BASE_ENV, ROOT


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("DB_", "REDIS_", "JWT_", "ZERO_", "DATABASE_URL", "ENVIRONMENT", "CORS_", "PORT")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(ROOT / "tests")  # no .env here
    return monkeypatch


def test_brief_settings_from_environment(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DB_HOST": "db.internal",
        "DB_PORT": "6543",
        "DB_NAME": "evently",
        "DB_USER": "svc",
        "DB_PASSWORD": "pw",
        "REDIS_HOST": "cache",
        "REDIS_PORT": "6380",
        "REDIS_PASSWORD": "rpw",
        "REDIS_USE_TLS": "true",
        "JWT_ALGORITHM": "HS512",
        "JWT_EXPIRY_MINUTES": "45",
        "CORS_ORIGINS": "https://a.example, https://b.example",
        "BOOKING_TIMEOUT_MINUTES": "20",
        "WAITLIST_NOTIFICATION_TIMEOUT_HOURS": "12",
    }.items():
        clean_env.setenv(name, value)
    settings = load_settings()
    assert settings.sqlalchemy_database_url == "postgresql+asyncpg://svc:pw@db.internal:6543/evently"
    assert settings.redis_connection_url == "rediss://:rpw@cache:6380/0"
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert (settings.booking_timeout_minutes, settings.waitlist_notification_timeout_hours) == (20, 12)
    assert settings.jwt_algorithm == "HS512" and settings.jwt_expiry_minutes == 45
    assert "pw" not in repr(settings)


def test_whole_urls_win(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in {**BASE_ENV, "DB_HOST": "ignored"}.items():
        clean_env.setenv(name, value)
    assert load_settings().sqlalchemy_database_url == "postgresql+asyncpg://u@db:5432/bookings"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"BOOKING_TIMEOUT_MINUTES": "-3"}, "BOOKING_TIMEOUT_MINUTES"),
        ({"JWT_ALGORITHM": "none"}, "JWT_ALGORITHM"),
        ({"ENVIRONMENT": "production", "JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"ENVIRONMENT": "production"}, "JWT_SECRET"),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"EVENTS_STREAM_MAXLEN": "100", "OUTBOX_BATCH_SIZE": "500"}, "EVENTS_STREAM_MAXLEN"),
    ],
)
def test_bad_setting_stops_startup_with_one_line(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], named: str
) -> None:
    for name, value in {**BASE_ENV, **env}.items():
        clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as stopped:
        load_settings()
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err


def test_production_accepts_a_strong_secret(clean_env: pytest.MonkeyPatch) -> None:
    strong = {"JWT_SECRET": "s" * 48, "PAYMENT_WEBHOOK_SECRET": "w" * 32}
    for name, value in {**BASE_ENV, "ENVIRONMENT": "production", **strong}.items():
        clean_env.setenv(name, value)
    assert load_settings().environment is Environment.PRODUCTION


def test_main_exits_cleanly_on_bad_setting() -> None:
    env = {"PATH": os.environ["PATH"], **BASE_ENV, "PORT": "not-a-port"}
    result = subprocess.run([sys.executable, "main.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "PORT" in result.stderr


class ZeroStub:
    """A local server answering Zero's GraphQL `secrets` query the way Zero does."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                stub.requests.append(json.loads(self.rfile.read(length)))
                body = json.dumps(stub.answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/graphql"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def zero_stub() -> Iterator[ZeroStub]:
    stub = ZeroStub(
        {
            "data": {
                "secrets": [
                    {
                        "name": "db",
                        "fields": [{"name": "DB_HOST", "value": "zero-db"}, {"name": "DB_PASSWORD", "value": "zpw"}],
                    },
                    {"name": "auth", "fields": [{"name": "JWT_SECRET", "value": "z" * 40}]},
                ]
            }
        }
    )
    yield stub
    stub.close()


def _use_zero(env: pytest.MonkeyPatch, url: str) -> None:
    env.setenv("ZERO_TOKEN", "zero-token")
    env.setenv("ZERO_PICK", "db,auth")
    env.setenv("ZERO_API_URL", url)
    env.setenv("REDIS_URL", "redis://cache:6379/0")


def test_zero_secrets_become_settings_and_environment_overrides(
    clean_env: pytest.MonkeyPatch, zero_stub: ZeroStub
) -> None:
    _use_zero(clean_env, zero_stub.url)
    clean_env.setenv("DB_PASSWORD", "from-env")
    settings = Settings()
    assert settings.db_host == "zero-db"
    assert settings.db_password.get_secret_value() == "from-env"
    assert settings.jwt_secret.get_secret_value() == "z" * 40
    variables = zero_stub.requests[0]["variables"]
    assert variables["token"] == "zero-token" and variables["pick"] == ["db", "auth"]


def test_zero_error_answer_stops_startup(
    clean_env: pytest.MonkeyPatch, zero_stub: ZeroStub, capsys: pytest.CaptureFixture[str]
) -> None:
    zero_stub.answer = {"errors": [{"message": "Invalid token"}], "data": None}
    _use_zero(clean_env, zero_stub.url)
    with pytest.raises(SettingsError):
        load_settings()
    err = capsys.readouterr().err
    assert "Zero" in err and "Invalid token" in err


def test_zero_unreachable_stops_startup(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _use_zero(clean_env, "http://127.0.0.1:9/graphql")
    with pytest.raises(SettingsError):
        load_settings()
    assert "Zero" in capsys.readouterr().err


def test_zero_variables_in_dotenv_are_honoured(
    clean_env: pytest.MonkeyPatch, zero_stub: ZeroStub, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        f"ZERO_TOKEN=zero-token\nZERO_PICK=db,auth\nZERO_API_URL={zero_stub.url}\nREDIS_URL=redis://cache:6379/0\n"
    )
    clean_env.chdir(tmp_path)
    settings = load_settings()
    assert settings.db_host == "zero-db" and settings.jwt_secret.get_secret_value() == "z" * 40
    assert zero_stub.requests[0]["variables"]["pick"] == ["db", "auth"]
    clean_env.setenv("ZERO_PICK", "auth")  # the environment wins over .env, as for every setting
    assert Settings(db_host="h").db_host == "h" and zero_stub.requests[1]["variables"]["pick"] == ["auth"]
