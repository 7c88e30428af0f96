"""The OpenAPI document: FastAPI's, completed with what the routes cannot say themselves.

Built on the first request for it (never at start-up), then kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from app.api import openapi_settings
from app.core.config import Settings
from app.schemas.common import Problem
from app.schemas.payment import PaymentWebhook

TAGS = [
    {"name": "bookings", "description": "Your bookings: create, read, cancel, pay."},
    {"name": "availability", "description": "An event's seats, temporary holds, and a live feed of changes."},
    {"name": "waitlist", "description": "Wait for seats; book them when they are offered to you."},
    {"name": "waiting room", "description": "Wait your turn for an event behind its waiting room."},
    {"name": "admin", "description": "Every booking, event, waitlist entry and the audit trail (`role=admin`)."},
    {"name": "payments", "description": "The payment provider's signed callback."},
    {"name": "system", "description": "Liveness, health, service information and metrics; open to all."},
]
CONTACT = {"name": "Evently bookings team", "url": "https://evently.dev/bookings"}
SERVERS = [{"url": "/", "description": "The service that serves this document"}]
# Models a route reads or answers by hand (raw body, rendered problems), not through FastAPI.
EXTRA_MODELS: tuple[tuple[type[BaseModel], str], ...] = ((Problem, "serialization"), (PaymentWebhook, "validation"))
HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id: the one sent in `X-Request-ID` when valid, else a new one. "
        "Logs and audit entries carry it.",
        "schema": {"type": "string", "maxLength": 64},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the same "
        "`Idempotency-Key`; nothing was done again.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Location": {"description": "The path of what was created.", "schema": {"type": "string"}},
}
INTEGER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
INT64_MAX = 2**63 - 1


def install(app: FastAPI, settings: Settings) -> None:
    app.openapi_tags = TAGS
    app.servers = SERVERS
    app.contact = CONTACT
    generate = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            complete(schema)
            openapi_settings.apply(schema, settings)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def complete(schema: dict[str, Any]) -> None:
    """Add what routes refer to but FastAPI does not collect, and fix what it renders loosely."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model, mode in EXTRA_MODELS:
        schemas.update(_component(model, mode))
    components["headers"] = HEADERS
    request_id = {"$ref": "#/components/headers/X-Request-ID"}
    for operations in schema["paths"].values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {}).setdefault("X-Request-ID", request_id)
    _walk(schema, _integer_bounds)


def _component(model: type[BaseModel], mode: Any) -> dict[str, Any]:
    found = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    definitions: dict[str, Any] = found.pop("$defs", {})
    return {**definitions, model.__name__: found}


def _walk(node: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


def _integer_bounds(node: dict[str, Any]) -> None:
    """FastAPI's OpenAPI model holds bounds as floats (`1.0`, and 2**63-1 rounded up to 2**63):
    an integer's bounds are written back as integers, within int64."""
    if node.get("type") != "integer":
        return
    for key in INTEGER_BOUNDS:
        value = node.get(key)
        if isinstance(value, float):
            node[key] = max(-INT64_MAX - 1, min(INT64_MAX, int(value)))
