"""Availability kept in step with the events service's announcements (SPEC section 5, inbound).

`EventCreated`/`EventUpdated` create or update the event's availability (name, capacity, price,
start time, status); `EventDeleted` closes its sales. Sales are open only while the event is
`published`; closing them keeps every booking and counter. A capacity below the seats already held
or sold is refused (logged and audited) while the rest of the message still applies. The same
message delivered again changes nothing: the digest of the last message applied is kept on the row.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from pydantic import ValidationError
from redis.asyncio.client import PubSub
from sqlalchemy import select

from app.core import metrics
from app.core.errors import CapacityBelowHeldError
from app.core.logging import get_logger
from app.models.event_availability import EventAvailability
from app.runtime import Runtime
from app.schemas.inbound import InboundEventMessage
from app.services.audit import Actor
from app.services.availability import apply_changes, record_change
from app.services.seats import snapshot
from app.services.unit_of_work import UnitOfWork

log = get_logger(__name__)
EVENTS_SERVICE = Actor("events-service")
KINDS = ("created", "updated", "deleted")


async def handle(runtime: Runtime, raw: bytes | str) -> str:
    """Apply one message; returns `applied`, `duplicate`, `ignored` or `malformed`. Never raises
    for a bad message."""
    try:
        message = InboundEventMessage.model_validate_json(raw)
    except ValidationError as exc:
        log.warning("inbound_message_malformed", errors=exc.error_count())
        metrics.INBOUND_MESSAGES.labels("malformed").inc()
        return "malformed"
    digest = hashlib.sha256(raw if isinstance(raw, bytes) else raw.encode()).hexdigest()
    result = await runtime.transactions.locked(message.event_id, lambda uow: _apply(uow, message, digest))
    metrics.INBOUND_MESSAGES.labels(result).inc()
    return result


async def _apply(uow: UnitOfWork, message: InboundEventMessage, digest: str) -> str:
    event = await uow.session.scalar(
        select(EventAvailability).where(EventAvailability.event_id == message.event_id).with_for_update(key_share=True)
    )
    if event is not None and event.last_inbound_digest == digest:
        return "duplicate"
    if event is None and message.type == "EventDeleted":
        return "ignored"
    before = snapshot(event) if event is not None else None
    freed = 0
    if message.type == "EventDeleted":
        assert event is not None
        event.sales_open, event.event_status = False, "deleted"
    elif event is None:
        event = _new_event(message)
        uow.session.add(event)
    else:
        freed = _update(uow, event, message)
    event.last_inbound_digest = digest
    event.last_updated = uow.now
    if before is not None:
        event.version += 1
    action = "availability.created" if before is None else "availability.synced"
    await record_change(uow, EVENTS_SERVICE, action, event, before, freed)
    return "applied"


def _new_event(message: InboundEventMessage) -> EventAvailability:
    data = message.event_data
    assert data is not None
    return EventAvailability(
        event_id=message.event_id,
        event_name=data.name or data.title or f"Event {message.event_id}",
        total_capacity=data.capacity,
        available_capacity=data.capacity,
        reserved_capacity=0,
        confirmed_capacity=0,
        price=data.price.quantize(Decimal("0.01")),
        currency="USD",
        sales_open=data.status == "published",
        event_status=data.status,
        starts_at=data.event_date,
        version=1,
    )


def _update(uow: UnitOfWork, event: EventAvailability, message: InboundEventMessage) -> int:
    data = message.event_data
    assert data is not None
    apply_changes(
        event,
        {
            "event_name": data.name or data.title or event.event_name,
            "price": data.price.quantize(Decimal("0.01")),
            "starts_at": data.event_date,
            "sales_open": data.status == "published",
            "event_status": data.status,
        },
    )
    try:
        return apply_changes(event, {"total_capacity": data.capacity})
    except CapacityBelowHeldError as exc:
        log.warning("inbound_capacity_refused", event_id=event.event_id, capacity=data.capacity)
        metrics.INBOUND_MESSAGES.labels("capacity_refused").inc()
        refused = {"requested_capacity": data.capacity, "reason": exc.detail}
        uow.audit(EVENTS_SERVICE, "availability.capacity_refused", "event_availability", event.event_id, after=refused)
        return 0


async def run_subscriber(runtime: Runtime) -> None:
    """Listen on `<INBOUND_CHANNEL_PREFIX>:created|updated|deleted`, reconnecting by itself."""
    channels = [f"{runtime.settings.inbound_channel_prefix}:{kind}" for kind in KINDS]

    async def listen(pubsub: PubSub) -> None:
        log.info("inbound_subscribed", channels=channels)
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None:
                await _handle_safely(runtime, message["data"])

    await runtime.redis.keep_subscribed(channels, listen, "inbound_subscriber")


async def _handle_safely(runtime: Runtime, data: bytes) -> None:
    try:
        await handle(runtime, data)
    except Exception:  # the database may be down: log it, and keep listening
        metrics.INBOUND_MESSAGES.labels("failed").inc()
        log.exception("inbound_message_failed")
