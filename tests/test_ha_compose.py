"""The compose file's `ha` profile, read against the settings (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from app.core.config import Settings
from app.core.database_urls import host_count

ROOT = Path(__file__).resolve().parent.parent


def test_ha_profile_runs_patroni_sentinels_and_three_instances_on_them() -> None:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    ha = {name for name, service in services.items() if service.get("profiles") == ["ha"]}
    assert {"etcd", "pg1", "pg2", "pg3", "redis-primary", "redis-replica", "bookings-ha", "migrate-ha"} <= ha
    assert {"sentinel1", "sentinel2", "sentinel3"} <= ha
    assert services["bookings-ha"]["deploy"]["replicas"] == 3
    patroni = (ROOT / "deploy" / "ha" / "patroni.yml").read_text()
    assert "synchronous_mode: true" in patroni and "primary_start_timeout: 0" in patroni
    environment = {name: str(value) for name, value in services["bookings-ha"]["environment"].items()}
    for name in environment:
        assert name.lower() in Settings.model_fields or name.startswith("ZERO_"), f"{name} is not a setting"
    values = {name.lower(): value.replace("${DB_PASSWORD:-bookings}", "pw") for name, value in environment.items()}
    values["jwt_secret"] = "x" * 40
    values["payment_webhook_secret"] = "w" * 40  # compose requires both from the environment
    settings = Settings(_env_file=None, **{k: v for k, v in values.items() if "${" not in v})  # type: ignore[call-arg]
    assert host_count(settings.sqlalchemy_database_url) == 3
    assert settings.redis_sentinel_nodes == [(f"sentinel{i}", 26379) for i in (1, 2, 3)]
    assert settings.redis_wait_replicas == 1
