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
from hypothesis import HealthCheck, given
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

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

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


def test_api_keeps_its_contract(service: tuple[ServiceProcess, str]) -> None:
    process, token = service
    headers = {"Authorization": f"Bearer {token}"}
    for event_id in (1, 2, 3):  # something real to find, book and list
        body = {"event_name": f"Event {event_id}", "total_capacity": 1000, "price": "10.00", "currency": "USD"}
        httpx.put(f"{process.url}/api/v1/admin/availability/{event_id}", json=body, headers=headers, timeout=10)
    schema = schemathesis.openapi.from_url(f"{process.url}/openapi.json")
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/stream"):
            continue  # an endless Server-Sent Events stream; covered in tests/test_events.py

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def exercise(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, timeout=10, checks=CHECKS)

        try:
            exercise()
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure, report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
