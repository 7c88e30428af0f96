"""The OpenAPI document's bounds that are settings, not constants of the models."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.core.config import Settings

# Request models whose `quantity` is capped by MAX_TICKETS_PER_BOOKING (checked in app/services/bookings.py).
TICKET_QUANTITY_MODELS = ("BookingCreate", "ReserveRequest", "WaitlistJoin")


def install(app: FastAPI, settings: Settings) -> None:
    """Write this instance's ticket limit into the document when it is first built."""
    generate = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            set_ticket_limit(schema, settings.max_tickets_per_booking)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def set_ticket_limit(schema: dict[str, Any], limit: int) -> None:
    models = schema.get("components", {}).get("schemas", {})
    for name in TICKET_QUANTITY_MODELS:
        quantity = models.get(name, {}).get("properties", {}).get("quantity")
        if quantity is not None:
            quantity["maximum"] = limit
