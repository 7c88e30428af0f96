"""Payments: starting one, and applying the provider's signed webhook (SPEC sections 3 and 9)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select

from app.core.errors import (
    AmountMismatchError,
    BookingNotPayableError,
    InvalidSignatureError,
    NotFoundError,
    StaleSignatureError,
)
from app.core.logging import get_logger
from app.core.security import Principal
from app.models.booking import Booking
from app.models.enums import BookingStatus, PaymentStatus
from app.runtime import Runtime
from app.schemas.payment import PaymentIntent, PaymentOutcome, PaymentWebhook
from app.services import bookings, idempotency
from app.services.audit import Actor
from app.services.changes import expire, move, refuse_if_lapsed
from app.services.lifecycles import BOOKING, PAYMENT
from app.services.seats import get_event
from app.services.unit_of_work import UnitOfWork

log = get_logger(__name__)
PROVIDER = Actor.payment_provider()
# ASCII only: str.isdigit() and int() also take "²" or "١٢٣"; hmac.compare_digest refuses non-ASCII text.
TIMESTAMP = re.compile(r"[0-9]{1,12}")
HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def verify_signature(header: str | None, body: bytes, secret: str, tolerance: int, now: float | None = None) -> None:
    """`Evently-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    if not secret:
        raise InvalidSignatureError("Webhooks are not configured (PAYMENT_WEBHOOK_SECRET is empty)")
    parts = dict(item.split("=", 1) for item in (header or "").split(",") if "=" in item)
    timestamp, signature = parts.get("t", ""), parts.get("v1", "")
    if not TIMESTAMP.fullmatch(timestamp) or not HEX_DIGEST.fullmatch(signature):
        raise InvalidSignatureError("Missing or malformed Evently-Signature header")
    if abs((now if now is not None else time.time()) - int(timestamp)) > tolerance:
        raise StaleSignatureError("The signature timestamp is too old or in the future")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise InvalidSignatureError("The signature does not match the body")


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header value the provider sends (used by tests and tooling)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def _intent(booking: Booking) -> PaymentIntent:
    assert booking.payment_reference is not None and booking.payment_method is not None
    return PaymentIntent(
        booking_id=booking.id,
        booking_reference=booking.booking_reference,
        payment_reference=booking.payment_reference,
        payment_method=booking.payment_method,
        payment_status=booking.payment_status,
        amount=booking.total_amount,
        currency=booking.currency,
    )


async def start_payment(
    runtime: Runtime, principal: Principal, booking_id: int, method: str, claim: idempotency.Claim | None
) -> PaymentIntent:
    """pending (or failed) -> processing for a pending, unexpired booking of the caller's."""
    booking = await bookings.get_booking(runtime, booking_id, principal.user_id)

    async def operation(uow: UnitOfWork) -> PaymentIntent:
        current = await uow.session.get(Booking, booking.id, populate_existing=True, with_for_update=True)
        assert current is not None
        not_payable = BookingNotPayableError(f"A {current.status.value} booking cannot be paid")
        await refuse_if_lapsed(uow, BOOKING, current, not_payable)
        if current.status is not BookingStatus.PENDING:
            raise not_payable
        reference = "pay_" + secrets.token_hex(12)
        actor = Actor.of(principal)
        await PAYMENT.apply(uow, current, "start", actor, payment_method=method, payment_reference=reference)
        intent = _intent(current)
        uow.answer(claim, 201, intent.model_dump(mode="json"))
        return intent

    # Starting a payment moves no seats: it locks its booking's row, not the event. Under load, the
    # event's payments being started share a transaction.
    return await runtime.transactions.grouped_unlocked(booking.event_id, operation)


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    booking: Booking
    applied: bool


async def apply_webhook(runtime: Runtime, event: PaymentWebhook) -> WebhookOutcome:
    async with runtime.sessionmaker() as session:
        booking = await session.scalar(select(Booking).where(Booking.payment_reference == event.payment_reference))
    if booking is None:
        log.warning("payment_webhook_unknown_reference", payment_reference=event.payment_reference)
        raise NotFoundError("No booking has this payment reference")
    if event.outcome is PaymentOutcome.SUCCEEDED and (
        event.amount != booking.total_amount or event.currency != booking.currency
    ):
        await _audit_refusal(runtime, booking, event)
        raise AmountMismatchError(
            f"Paid {event.amount} {event.currency}, the booking costs {booking.total_amount} {booking.currency}"
        )

    async def operation(uow: UnitOfWork) -> WebhookOutcome:
        current = await uow.session.get(Booking, booking.id, populate_existing=True)
        assert current is not None
        if current.payment_reference != event.payment_reference:  # a new attempt started meanwhile
            log.warning("payment_webhook_for_a_replaced_attempt", booking_id=current.id)
            return WebhookOutcome(current, applied=False)
        if event.outcome is PaymentOutcome.SUCCEEDED:
            return await _succeeded(uow, current)
        return await _failed(uow, current)

    # Confirmations of one event move its seats one at a time: under load, those waiting share a transaction.
    return await runtime.transactions.grouped(booking.event_id, operation)


async def _succeeded(uow: UnitOfWork, booking: Booking) -> WebhookOutcome:
    if booking.payment_status in (PaymentStatus.COMPLETED, PaymentStatus.REFUNDED):
        return WebhookOutcome(booking, applied=False)
    if booking.lapsed:  # lapsed but not yet swept: its seats return first
        await expire(uow, BOOKING, booking)
    if booking.status is BookingStatus.PENDING:
        await move(uow, BOOKING, booking, "confirm", PROVIDER, along=[(PAYMENT, "complete")], confirmed_at=uow.now)
    elif booking.status is BookingStatus.EXPIRED:
        await _late_success(uow, booking)
    else:  # paid for a booking that was cancelled meanwhile: the money goes back
        await PAYMENT.apply(uow, booking, "refund", PROVIDER)
    return WebhookOutcome(booking, applied=True)


async def _late_success(uow: UnitOfWork, booking: Booking) -> None:
    """Paid after expiry: confirmed if the seats can still be had, else the payment is refunded."""
    event = await get_event(uow.session, booking.event_id, for_update=True)
    if event.available_capacity < booking.quantity:
        await PAYMENT.apply(uow, booking, "refund", PROVIDER)
        return
    along = [(PAYMENT, "complete")]
    await move(uow, BOOKING, booking, "confirm_late", PROVIDER, along=along, confirmed_at=uow.now)


async def _failed(uow: UnitOfWork, booking: Booking) -> WebhookOutcome:
    if PAYMENT.find("fail", booking.payment_status) is None:
        return WebhookOutcome(booking, applied=False)  # a repeat, or news older than a success
    await PAYMENT.apply(uow, booking, "fail", PROVIDER)
    return WebhookOutcome(booking, applied=True)


async def _audit_refusal(runtime: Runtime, booking: Booking, event: PaymentWebhook) -> None:
    """Refused money is on record, though nothing changes."""
    log.warning("payment_webhook_amount_mismatch", booking_id=booking.id)

    async def operation(uow: UnitOfWork) -> None:
        after = {"amount": str(event.amount), "currency": event.currency, "outcome": event.outcome.value}
        uow.audit(PROVIDER, "payment.refused_amount_mismatch", PAYMENT.entity_type, booking.id, after=after)

    await runtime.transactions.unlocked(operation)
