"""The OpenAPI document clients are generated from: its shape, and its examples sent for real.

spectral's lint and a generated client are checked in tests/test_openapi_tools.py (`make test-long`).
"""

from __future__ import annotations

import http
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from app.api.problems import PROBLEM_JSON
from app.api.v1 import admin, availability, bookings, payments, queue, waitlist
from app.application import create_app
from app.core.security import Role
from app.schemas.system import HealthRead, InfoRead
from app.services.payments import sign
from tests.conftest import WEBHOOK_SECRET, Api, make_settings

Operation = dict[str, Any]
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
MONEY_FIELDS = {"price", "total_amount", "amount"}
# The one error answer that is not a problem: an unhealthy service's health report (SPEC: 503).
NOT_PROBLEMS = {("getHealth", "503")}
OPEN_OPERATIONS = {"getLiveness", "getHealth", "getServiceInfo", "getMetrics", "receivePaymentWebhook"}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    # No database or Redis is touched: the app is only built, never started.
    return create_app(make_settings("postgresql+asyncpg://postgres@127.0.0.1:9/none", "redis://127.0.0.1:9/0"))


@pytest.fixture(scope="module")
def doc(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, Operation]]:
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def by_id(doc: dict[str, Any]) -> dict[str, tuple[str, str, Operation]]:
    return {op["operationId"]: (path, method, op) for path, method, op in operations(doc)}


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_the_document_is_built_on_first_request_not_at_start_up() -> None:
    app = create_app(make_settings("postgresql+asyncpg://postgres@127.0.0.1:9/none", "redis://127.0.0.1:9/0"))
    assert app.openapi_schema is None
    assert app.openapi() is app.openapi()  # built once, then kept


def test_every_operation_has_a_readable_id_and_a_description(doc: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))
    for path, method, op in operations(doc):
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)*", op["operationId"]), (method, path, op["operationId"])
        assert op.get("summary") and len(op.get("description", "")) > 20, op["operationId"]
        assert op["tags"][0] in {tag["name"] for tag in doc["tags"]}


def test_every_error_is_a_problem_with_its_codes(doc: dict[str, Any]) -> None:
    for _, _, op in operations(doc):
        responses = op["responses"]
        assert "500" in responses, op["operationId"]
        if op["operationId"] not in OPEN_OPERATIONS:
            assert {"401", "503"} <= responses.keys(), op["operationId"]
        for status, response in responses.items():
            if int(status) < 400 or (op["operationId"], status) in NOT_PROBLEMS:
                continue
            assert list(response["content"]) == [PROBLEM_JSON], (op["operationId"], status)
            media = response["content"][PROBLEM_JSON]
            assert media["schema"] == PROBLEM_REF
            codes = re.findall(r"`([a-z_]+)`", response["description"])
            assert codes and codes == list(media["examples"]), (op["operationId"], status)
            for code, example in media["examples"].items():
                assert example["value"]["code"] == code and example["value"]["status"] == int(status)


def test_each_router_lists_the_problems_of_its_own_operations(doc: dict[str, Any]) -> None:
    tables = [router.PROBLEMS for router in (admin, availability, bookings, payments, queue, waitlist)]
    listed = [operation_id for table in tables for operation_id in table]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(by_id(doc)) - {"getLiveness", "getHealth", "getServiceInfo", "getMetrics"}
    for table in tables:
        for operation_id, responses in table.items():
            _, _, op = by_id(doc)[operation_id]
            assert {str(status) for status in responses} <= op["responses"].keys()


def test_the_problem_schema_names_its_fields(doc: dict[str, Any]) -> None:
    problem = doc["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code", "instance", "errors"} <= problem["properties"].keys()
    assert set(problem["required"]) == {"title", "status", "detail", "code"}


def test_response_headers_are_documented(doc: dict[str, Any]) -> None:
    assert {"X-Request-ID", "Retry-After", "Idempotent-Replayed"} <= doc["components"]["headers"].keys()
    for _, _, op in operations(doc):
        idempotent = any(p["name"] == "idempotency-key" for p in op.get("parameters", []))
        for status, response in op["responses"].items():
            headers = response.get("headers", {})
            assert "X-Request-ID" in headers, (op["operationId"], status)
            in_progress = "`idempotency_in_progress`" in response["description"]
            if (status in ("429", "503") and (op["operationId"], status) not in NOT_PROBLEMS) or in_progress:
                assert "Retry-After" in headers, (op["operationId"], status)
            if idempotent and status.startswith("2"):
                assert "Idempotent-Replayed" in headers, op["operationId"]


def test_every_request_body_has_an_example(doc: dict[str, Any]) -> None:
    for _, _, op in operations(doc):
        if "requestBody" in op:
            assert op["requestBody"]["content"]["application/json"]["examples"], op["operationId"]


def test_the_webhook_documents_its_body_and_signature(doc: dict[str, Any]) -> None:
    _, _, op = by_id(doc)["receivePaymentWebhook"]
    body = op["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/PaymentWebhook"}
    assert doc["components"]["schemas"]["PaymentWebhook"]["required"] == [
        "payment_reference",
        "outcome",
        "amount",
        "currency",
    ]
    signature = next(p for p in op["parameters"] if p["name"] == "Evently-Signature")
    assert signature["in"] == "header" and "HMAC-SHA256" in signature["description"]
    assert "security" not in op


def test_the_stream_is_documented_as_server_sent_events(doc: dict[str, Any]) -> None:
    _, _, op = by_id(doc)["streamAvailability"]
    content = op["responses"]["200"]["content"]
    assert list(content) == ["text/event-stream"]
    assert content["text/event-stream"]["x-event-data"]["availability"] == {
        "$ref": "#/components/schemas/EventAvailabilityRead"
    }
    assert content["text/event-stream"]["example"].startswith("event: availability\nid: 7\ndata: {")


def test_money_is_a_decimal_string(doc: dict[str, Any]) -> None:
    seen = set()
    for name, schema in doc["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            if field in MONEY_FIELDS:
                seen.add(f"{name}.{field}")
                assert prop["type"] == "string" and "anyOf" not in prop, (name, field)
                assert re.fullmatch(prop["pattern"], "49.90") and not re.fullmatch(prop["pattern"], "4.9e1")
    assert {"BookingRead.total_amount", "EventAvailabilityUpsert.price", "PaymentIntent.amount"} <= seen
    assert {"EventAvailabilityRead.price", "PaymentWebhook.amount"} <= seen


def test_integer_bounds_are_integers(doc: dict[str, Any]) -> None:
    checked = 0
    for node in walk(doc):
        if node.get("type") == "integer":
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                if key in node:
                    checked += 1
                    assert type(node[key]) is int and node[key] <= 2**63 - 1, node
    assert checked > 20
    assert '"maximum": 9223372036854775807' in json.dumps(doc)


# The documented examples, sent in the order examples.py tells them, each by whom and where.
USER, OTHER_USER = 7, 8
STORY: list[tuple[str, int | None, dict[str, int]]] = [
    ("upsertAvailability", 1, {"event_id": 1}),
    ("reserveSeats", USER, {"event_id": 1}),
    ("createBooking", USER, {}),
    ("joinWaitlist", OTHER_USER, {}),
    ("updateWaitlistEntry", 1, {"entry_id": 1}),
    ("startPayment", USER, {"booking_id": 1}),
    ("receivePaymentWebhook", None, {}),
    ("refundBooking", 1, {"booking_id": 1}),
    ("confirmBooking", 1, {"booking_id": 2}),
    ("configureWaitingRoom", 1, {"event_id": 1}),
]


def _headers(api: Api, who: int | None) -> dict[str, str]:
    if who is None:
        return {}
    return api.headers(who, Role.ADMIN if who == 1 else Role.USER)


async def test_the_documented_examples_work_on_a_fresh_service(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    with_bodies = {op["operationId"] for _, _, op in operations(doc) if "requestBody" in op}
    assert with_bodies == {operation_id for operation_id, _, _ in STORY}
    operations_by_id = by_id(doc)
    payment_reference = None
    for operation_id, who, params in STORY:
        path, method, op = operations_by_id[operation_id]
        success = next(status for status in op["responses"] if status.startswith("2"))
        for name, example in op["requestBody"]["content"]["application/json"]["examples"].items():
            body = dict(example["value"])
            headers = _headers(api, who)
            if operation_id == "receivePaymentWebhook":
                body["payment_reference"] = payment_reference
                raw = json.dumps(body).encode()
                headers = {"Evently-Signature": sign(raw, WEBHOOK_SECRET), "Content-Type": "application/json"}
                response = await api.client.post(path, content=raw, headers=headers)
            else:
                response = await api.client.request(method, path.format(**params), json=body, headers=headers)
            assert response.status_code == int(success), (operation_id, name, response.text)
            if operation_id == "startPayment":
                payment_reference = response.json()["payment_reference"]
    booking = await api.client.get("/api/v1/admin/bookings/1", headers=api.admin())
    assert (booking.json()["status"], booking.json()["payment_status"]) == ("refunded", "refunded")
    second = await api.client.get("/api/v1/admin/bookings/2", headers=api.admin())
    assert second.json()["status"] == "confirmed"
    entries = await api.client.get("/api/v1/waitlist/", headers=api.headers(OTHER_USER))
    assert entries.json()["items"][0]["status"] == "notified"  # booking 1's seats, offered

    # A refusal now is one the document lists, in the documented shape.
    _, _, create = operations_by_id["createBooking"]
    refused = await api.book(USER, 1, 2)
    assert refused.headers["content-type"] == PROBLEM_JSON and "x-request-id" in refused.headers
    documented = create["responses"][str(refused.status_code)]
    assert refused.json()["code"] in documented["content"][PROBLEM_JSON]["examples"]
    assert refused.json()["code"] == "admission_required"  # the story ends with the waiting room on


def test_status_phrases_are_http_phrases(doc: dict[str, Any]) -> None:
    for _, _, op in operations(doc):
        for status, response in op["responses"].items():
            if int(status) >= 400 and (op["operationId"], status) not in NOT_PROBLEMS:
                assert response["description"].startswith(http.HTTPStatus(int(status)).phrase)


async def test_created_bookings_are_located(api: Api) -> None:
    await api.create_event(1, capacity=1)
    headers = {**api.headers(5), "Idempotency-Key": "book-once"}
    first = await api.client.post("/api/v1/bookings/", json={"event_id": 1, "quantity": 1}, headers=headers)
    again = await api.client.post("/api/v1/bookings/", json={"event_id": 1, "quantity": 1}, headers=headers)
    assert first.status_code == again.status_code == 201, first.text
    assert first.headers["location"] == again.headers["location"] == f"/api/v1/bookings/{first.json()['id']}"
    assert again.headers["idempotent-replayed"] == "true"
    assert (await api.client.get(first.headers["location"], headers=api.headers(5))).json()["id"] == first.json()["id"]
    refused = await api.book(6, 1)
    assert refused.status_code == 409 and "location" not in refused.headers

    entry = await api.client.post("/api/v1/waitlist/", json={"event_id": 1, "quantity": 1}, headers=api.headers(6))
    cancelled = await api.client.put(f"{first.headers['location']}/cancel", headers=api.headers(5))
    assert cancelled.status_code == 200, cancelled.text
    offer = await api.client.post(f"/api/v1/waitlist/{entry.json()['id']}/book", headers=api.headers(6))
    assert offer.status_code == 201, offer.text
    assert offer.headers["location"] == f"/api/v1/bookings/{offer.json()['id']}"
    assert offer.json()["waitlist_entry_id"] == entry.json()["id"] and offer.json()["total_amount"] == "10.00"


async def test_health_and_info_answer_what_is_documented(api: Api) -> None:
    health = HealthRead.model_validate((await api.client.get("/api/v1/health")).json())
    assert health.status == "healthy" and {"database", "redis"} <= health.checks.keys()
    info = InfoRead.model_validate((await api.client.get("/api/v1/info")).json())
    assert info.settings.max_tickets_per_booking == api.settings.max_tickets_per_booking
