"""Payments: starting one, and applying the provider's signed webhook (SPEC sections 3 and 9)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import clock
from app.core.errors import (
    AmountMismatchError,
    BookingNotPayableError,
    InvalidSignatureError,
    NotFoundError,
    PaymentInProgressError,
    StaleSignatureError,
)
from app.core.logging import get_logger
from app.core.security import Principal
from app.models.booking import Booking
from app.models.enums import BookingStatus, PaymentStatus
from app.schemas.payment import PaymentIntent, PaymentOutcome, PaymentWebhook
from app.services import audit, bookings, idempotency, outbox
from app.services.audit import Actor
from app.services.bookings import booking_data
from app.services.capacity import get_event, run_in_transaction, run_locked, shift_seats
from app.services.runtime import Runtime

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

    async def operation(session: AsyncSession) -> PaymentIntent:
        now = clock.now()
        current = await session.get(Booking, booking.id, populate_existing=True, with_for_update=True)
        assert current is not None
        if current.status is not BookingStatus.PENDING or current.is_expired:
            raise BookingNotPayableError(f"A {current.status.value} booking cannot be paid")
        if current.payment_status not in (PaymentStatus.PENDING, PaymentStatus.FAILED):
            raise PaymentInProgressError(f"The payment is already {current.payment_status.value}")
        before = booking_data(current)
        current.payment_status = PaymentStatus.PROCESSING
        current.payment_method = method
        current.payment_reference = "pay_" + secrets.token_hex(12)
        current.updated_at = now
        await session.flush()
        await audit.record(
            session,
            audit.audit_row(
                Actor.of(principal), "payment.started", "booking", current.id, now, before, booking_data(current)
            ),
        )
        intent = _intent(current)
        await idempotency.store_in(session, claim, 201, intent.model_dump(mode="json"))
        return intent

    # Starting a payment moves no seats: it locks its booking's row, not the event.
    return await run_in_transaction(runtime, operation)


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

    async def operation(session: AsyncSession) -> WebhookOutcome:
        current = await session.get(Booking, booking.id, populate_existing=True)
        assert current is not None
        if current.payment_reference != event.payment_reference:  # a new attempt started meanwhile
            log.warning("payment_webhook_for_a_replaced_attempt", booking_id=current.id)
            return WebhookOutcome(current, applied=False)
        if event.outcome is PaymentOutcome.SUCCEEDED:
            return await _succeeded(session, runtime, current)
        return await _failed(session, current)

    return await run_locked(runtime, booking.event_id, operation)


async def _succeeded(session: AsyncSession, runtime: Runtime, booking: Booking) -> WebhookOutcome:
    now = clock.now()
    if booking.payment_status in (PaymentStatus.COMPLETED, PaymentStatus.REFUNDED):
        return WebhookOutcome(booking, applied=False)
    if booking.status is BookingStatus.PENDING and not booking.is_expired:
        await bookings.transition(
            session,
            runtime,
            booking,
            BookingStatus.CONFIRMED,
            PROVIDER,
            now,
            payment_status=PaymentStatus.COMPLETED,
            confirmed_at=now,
        )
        return WebhookOutcome(booking, applied=True)
    if booking.status is BookingStatus.PENDING:  # lapsed but not yet swept: its seats return first
        await bookings.transition(session, runtime, booking, BookingStatus.EXPIRED, Actor.system(), now)
    if booking.status is BookingStatus.EXPIRED:
        return await _late_success(session, booking)
    # Paid for a booking that was cancelled meanwhile: the money goes back.
    await _mark_for_refund(session, booking, now)
    return WebhookOutcome(booking, applied=True)


async def _late_success(session: AsyncSession, booking: Booking) -> WebhookOutcome:
    """Paid after expiry: confirm if the seats can still be had, else the payment is refunded."""
    now = clock.now()
    event = await get_event(session, booking.event_id, for_update=True)
    if event.available_capacity < booking.quantity:
        await _mark_for_refund(session, booking, now)
        return WebhookOutcome(booking, applied=True)
    before = booking_data(booking)
    booking.status, booking.payment_status = BookingStatus.CONFIRMED, PaymentStatus.COMPLETED
    booking.confirmed_at, booking.updated_at = now, now
    await session.flush()
    await shift_seats(session, booking.event_id, available=-booking.quantity, confirmed=booking.quantity)
    after = booking_data(booking)
    await audit.record(
        session, audit.audit_row(PROVIDER, "booking.confirmed_late", "booking", booking.id, now, before, after)
    )
    await outbox.enqueue(session, now, outbox.booking_message("BookingConfirmed", booking, now))
    return WebhookOutcome(booking, applied=True)


async def _mark_for_refund(session: AsyncSession, booking: Booking, now: datetime) -> None:
    before = booking_data(booking)
    booking.payment_status, booking.updated_at = PaymentStatus.REFUNDED, now
    await session.flush()
    await bookings.announce_refund(session, PROVIDER, booking, before, booking_data(booking), now)


async def _failed(session: AsyncSession, booking: Booking) -> WebhookOutcome:
    if booking.payment_status is not PaymentStatus.PROCESSING:
        return WebhookOutcome(booking, applied=False)  # a repeat, or news older than a success
    now = clock.now()
    before = booking_data(booking)
    booking.payment_status, booking.updated_at = PaymentStatus.FAILED, now
    await session.flush()
    after = booking_data(booking)
    await audit.record(session, audit.audit_row(PROVIDER, "payment.failed", "booking", booking.id, now, before, after))
    await outbox.enqueue(session, now, outbox.booking_message("BookingPaymentFailed", booking, now))
    return WebhookOutcome(booking, applied=True)


async def _audit_refusal(runtime: Runtime, booking: Booking, event: PaymentWebhook) -> None:
    log.warning("payment_webhook_amount_mismatch", booking_id=booking.id)
    async with runtime.sessionmaker() as session, session.begin():
        await audit.record(
            session,
            audit.audit_row(
                PROVIDER,
                "payment.refused_amount_mismatch",
                "booking",
                booking.id,
                clock.now(),
                after={"amount": str(event.amount), "currency": event.currency, "outcome": event.outcome.value},
            ),
        )
