"""The OpenAPI document's bounds that are settings, not constants of the models."""

from __future__ import annotations

from typing import Any

from app.core.config import Settings

# Request models whose `quantity` is capped by MAX_TICKETS_PER_BOOKING (checked in app/services/bookings.py).
TICKET_QUANTITY_MODELS = ("BookingCreate", "ReserveRequest", "WaitlistJoin")


def apply(schema: dict[str, Any], settings: Settings) -> None:
    """This instance's ticket limit, written into the document as the bound of each `quantity`."""
    set_ticket_limit(schema, settings.max_tickets_per_booking)


def set_ticket_limit(schema: dict[str, Any], limit: int) -> None:
    models = schema.get("components", {}).get("schemas", {})
    for name in TICKET_QUANTITY_MODELS:
        quantity = models.get(name, {}).get("properties", {}).get("quantity")
        if quantity is not None:
            quantity["maximum"] = limit
