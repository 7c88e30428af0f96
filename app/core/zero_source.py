"""A pydantic-settings source that reads secrets from Zero (https://tryzero.com).

The secrets named in ``ZERO_PICK`` are fetched once, in a worker thread (the SDK runs its own
event loop with ``asyncio.run``), with a timeout. Every field of every picked secret becomes a
setting of the same name, so a secret ``db`` holding ``DB_HOST`` sets ``DB_HOST``. The ``ZERO_*``
variables are read like every other setting: from the environment, else from the settings' ``.env``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from zero_python_sdk import ZeroApiClient

ZERO_DEFAULT_API_URL = "https://core.tryzero.com/graphql"
ZERO_CALLER_NAME = "evently-bookings"


class ZeroUnavailableError(RuntimeError):
    """Zero could not be asked, or answered with an error."""


def fetch_zero_secrets(url: str, token: str, pick: list[str], timeout: float) -> dict[str, str]:
    """Return every field of the picked secrets, flattened into one mapping."""
    client = ZeroApiClient(url, token, pick, ZERO_CALLER_NAME)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="zero") as pool:
        future = pool.submit(client.fetch)
        try:
            secrets = future.result(timeout=timeout)
        except FutureTimeout as exc:
            raise ZeroUnavailableError(f"Zero did not answer within {timeout:g}s") from exc
        except Exception as exc:  # the SDK raises aiohttp, GraphQL and attribute errors alike
            raise ZeroUnavailableError(f"Zero refused the request: {exc}") from exc
    flattened: dict[str, str] = {}
    for fields in secrets.values():
        flattened.update(fields)
    return flattened


def _env_files(config: Mapping[str, Any]) -> list[Path]:
    configured = config.get("env_file")
    if configured is None:
        return []
    files = [configured] if isinstance(configured, str | Path) else list(configured)
    return [Path(name).expanduser() for name in files]


def _read_env_file(path: Path, config: Mapping[str, Any]) -> dict[str, str | None]:
    return dotenv_values(path, encoding=config.get("env_file_encoding")) if path.is_file() else {}


class ZeroSettingsSource(PydanticBaseSettingsSource):
    """Settings from Zero; active only when ``ZERO_TOKEN`` is set (in the environment or `.env`)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._values is None:
            variables = self._zero_variables()
            token = variables.get("ZERO_TOKEN", "")
            if not token:
                self._values = {}
            else:
                pick = [p.strip() for p in variables.get("ZERO_PICK", "").split(",") if p.strip()]
                url = variables.get("ZERO_API_URL") or ZERO_DEFAULT_API_URL
                timeout = float(variables.get("ZERO_TIMEOUT_SECONDS") or "10")
                self._values = fetch_zero_secrets(url, token, pick, timeout)
        return self._values

    def _zero_variables(self) -> dict[str, str]:
        """``ZERO_*`` from the settings' env files (later files win), then the environment over them."""
        sources: list[Mapping[str, str | None]] = [_read_env_file(f, self.config) for f in _env_files(self.config)]
        found: dict[str, str] = {}
        for source in [*sources, os.environ]:
            for name, value in source.items():
                if name.upper().startswith("ZERO_") and value is not None:
                    found[name.upper()] = value
        return found

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._load().get(field_name.upper()), field_name, False

    def __call__(self) -> dict[str, Any]:
        values = self._load()
        return {name: values[name.upper()] for name in self.settings_cls.model_fields if name.upper() in values}
