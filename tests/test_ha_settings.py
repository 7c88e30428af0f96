"""Settings for several PostgreSQL hosts, read replicas, Redis Sentinel and Redis Cluster."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects.postgresql.asyncpg import dialect
from sqlalchemy.engine import make_url

from app.core.config import Settings, SettingsError, load_settings

REDIS = {"redis_url": "redis://cache:6379/0"}
PG = {"database_url": "postgresql://u@db:5432/bookings"}


def settings(**values: str | None) -> Settings:
    return Settings(_env_file=None, **{**PG, **REDIS, **values})  # type: ignore[call-arg, arg-type]


def connect_args(url: str) -> dict[str, object]:
    return dict(dialect().create_connect_args(make_url(url))[1])


@pytest.mark.parametrize(
    ("given", "hosts", "ports", "attrs"),
    [
        # libpq's comma list: rewritten, asking for the writable host
        ("postgresql://u:pw@pg1:5432,pg2:5433/evently", ["pg1", "pg2"], [5432, 5433], "read-write"),
        ("postgresql+asyncpg://u@pg1,pg2,pg3/evently", ["pg1", "pg2", "pg3"], [5432] * 3, "read-write"),
        ("postgres://u@pg1:5432,pg2:5432/evently?target_session_attrs=primary", ["pg1", "pg2"], [5432] * 2, "primary"),
        # SQLAlchemy's own multihost form
        ("postgresql+asyncpg://u@/evently?host=pg1:5432&host=pg2:5433", ["pg1", "pg2"], [5432, 5433], "read-write"),
    ],
)
def test_several_database_hosts(given: str, hosts: list[str], ports: list[int], attrs: str) -> None:
    args = connect_args(settings(database_url=given).sqlalchemy_database_url)
    assert (args["host"], args["port"], args["target_session_attrs"], args["database"]) == (
        hosts,
        ports,
        attrs,
        "evently",
    )


def test_one_database_host_is_unchanged() -> None:
    assert settings().sqlalchemy_database_url == "postgresql+asyncpg://u@db:5432/bookings"
    assert "target_session_attrs" not in connect_args(settings().sqlalchemy_database_url)
    assert settings().sqlalchemy_read_database_url is None


def test_read_url_prefers_standbys() -> None:
    read = settings(database_read_url="postgresql://u@r1:5432,r2:5432/bookings").sqlalchemy_read_database_url
    assert read is not None
    assert connect_args(read)["target_session_attrs"] == "prefer-standby"


def test_sentinel_and_cluster_nodes() -> None:
    sentinel = settings(redis_url=None, redis_sentinels="s1:26379, s2:26380,[::1]:26381", redis_sentinel_service="pay")
    assert sentinel.redis_sentinel_nodes == [("s1", 26379), ("s2", 26380), ("::1", 26381)]
    assert sentinel.redis_sentinel_service == "pay"
    assert settings(redis_url=None, redis_sentinels="s1:26379").redis_sentinel_service == "mymaster"
    cluster = settings(redis_url=None, redis_cluster_nodes="n1:7000,n2:7001")
    assert cluster.redis_cluster_startup_nodes == [("n1", 7000), ("n2", 7001)]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_URL/REDIS_HOST and REDIS_SENTINELS are set together"),
        ({"REDIS_CLUSTER_NODES": "n1:7000"}, "REDIS_URL/REDIS_HOST and REDIS_CLUSTER_NODES are set together"),
        (
            {"REDIS_URL": "", "REDIS_SENTINELS": "s:1", "REDIS_CLUSTER_NODES": "n:2"},
            "REDIS_SENTINELS and REDIS_CLUSTER",
        ),
        ({"REDIS_URL": "", "REDIS_SENTINELS": "s1"}, "'s1' is not host:port"),
        ({"REDIS_URL": ""}, "one of REDIS_URL, REDIS_HOST, REDIS_SENTINELS or REDIS_CLUSTER_NODES must be set"),
    ],
)
def test_redis_topology_conflicts_stop_start_up(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("REDIS_HOST", "REDIS_SENTINELS", "REDIS_CLUSTER_NODES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", PG["database_url"])
    monkeypatch.setenv("REDIS_URL", REDIS["redis_url"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError):
        load_settings(_env_file=None)
    assert message in capsys.readouterr().err
