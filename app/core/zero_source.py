"""A pydantic-settings source that reads secrets from Zero (https://tryzero.com).

The secrets named in ``ZERO_PICK`` are fetched once, in a worker thread (the SDK runs its own
event loop with ``asyncio.run``), with a timeout. Every field of every picked secret becomes a
setting of the same name, so a secret ``db`` holding ``DB_HOST`` sets ``DB_HOST``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

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


class ZeroSettingsSource(PydanticBaseSettingsSource):
    """Settings from Zero; active only when ``ZERO_TOKEN`` is set in the environment."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._values is None:
            token = os.environ.get("ZERO_TOKEN", "")
            if not token:
                self._values = {}
            else:
                pick = [p.strip() for p in os.environ.get("ZERO_PICK", "").split(",") if p.strip()]
                url = os.environ.get("ZERO_API_URL", ZERO_DEFAULT_API_URL)
                timeout = float(os.environ.get("ZERO_TIMEOUT_SECONDS", "10"))
                self._values = fetch_zero_secrets(url, token, pick, timeout)
        return self._values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._load().get(field_name.upper()), field_name, False

    def __call__(self) -> dict[str, Any]:
        values = self._load()
        return {name: values[name.upper()] for name in self.settings_cls.model_fields if name.upper() in values}
