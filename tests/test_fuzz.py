"""Property-based API fuzzing: schemathesis against /openapi.json of a real service process.

Run by `make test-long`. Every operation gets generated requests (valid and invalid) with a valid
admin token; the service must never answer 5xx (other than a documented 503) and every answer must
match the documented status codes, content types and schemas.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from app.core.security import Role, create_access_token
from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.service_process import ServiceProcess
from tests.test_processes import process_env

pytestmark = pytest.mark.long


@pytest.fixture(scope="module")
def service(database_url: str, redis_url: str) -> Iterator[tuple[ServiceProcess, str]]:
    settings = make_settings(database_url, redis_url)
    process = ServiceProcess({**process_env(settings), "PAYMENT_WEBHOOK_SECRET": WEBHOOK_SECRET})
    process.start()
    token = create_access_token(settings, 1, role=Role.ADMIN)
    try:
        yield process, token
    finally:
        process.stop()


@pytest.fixture
def api_schema(service: tuple[ServiceProcess, str]) -> schemathesis.BaseSchema:
    process, token = service
    headers = {"Authorization": f"Bearer {token}"}
    for event_id in (1, 2, 3):  # something real to find, book and list
        body = {"event_name": f"Event {event_id}", "total_capacity": 1000, "price": "10.00", "currency": "USD"}
        httpx.put(f"{process.url}/api/v1/admin/availability/{event_id}", json=body, headers=headers, timeout=10)
    return schemathesis.openapi.from_url(f"{process.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_keeps_its_contract(case: schemathesis.Case, service: tuple[ServiceProcess, str]) -> None:
    _, token = service
    if case.path.endswith("/stream"):
        return  # an endless Server-Sent Events stream; covered in tests/test_events.py
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
