"""The payment provider's callback: open to the provider, authenticated by an HMAC signature."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import ValidationError

from app.api.deps import RuntimeDep
from app.api.v1 import PREFIX, examples
from app.api.v1.responses import ANY, LOCKED, PAYLOAD_TOO_LARGE, VALIDATED, Answer, problems
from app.core.errors import (
    AmountMismatchError,
    AppError,
    InvalidSignatureError,
    NotFoundError,
    StaleSignatureError,
    ValidationFailedError,
)
from app.core.logging import get_logger
from app.schemas.payment import PaymentWebhook, WebhookResult
from app.services import payments

log = get_logger(__name__)
router = APIRouter(prefix=f"{PREFIX}/payments", tags=["payments"])


# The problems the webhook answers, from what app/services/payments.py raises.
PROBLEMS = {
    "receivePaymentWebhook": problems(
        ANY,
        VALIDATED,  # the body is not a payment outcome
        PAYLOAD_TOO_LARGE,
        LOCKED,
        Answer.of(InvalidSignatureError),
        Answer.of(StaleSignatureError),
        Answer.of(NotFoundError),
        Answer.of(AmountMismatchError),
    ),
}
# The route reads the raw body (the signature covers its bytes), so FastAPI cannot document it.
WEBHOOK_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/PaymentWebhook"},
            "examples": examples.PAYMENT_WEBHOOK,
        }
    },
}
SIGNATURE = (
    "`t=<unix seconds>,v1=<hex>`: `<hex>` is the HMAC-SHA256, keyed with PAYMENT_WEBHOOK_SECRET, of "
    "`<t>.<raw body>`. Missing, malformed or wrong: 401 `invalid_signature`; `t` more than "
    "PAYMENT_WEBHOOK_TOLERANCE_SECONDS from now: 401 `stale_signature`."
)


@router.post(
    "/webhook",
    response_model=WebhookResult,
    operation_id="receivePaymentWebhook",
    responses=PROBLEMS["receivePaymentWebhook"],
    summary="Payment outcome from the provider (signed)",
    openapi_extra={"requestBody": WEBHOOK_BODY},
)
async def payment_webhook(
    request: Request,
    runtime: RuntimeDep,
    evently_signature: Annotated[str | None, Header(alias="Evently-Signature", description=SIGNATURE)] = None,
) -> WebhookResult:
    """Called by the payment provider, not by users: no bearer token, the `Evently-Signature` header
    instead. `succeeded` confirms the pending booking (`amount` and `currency` must be the booking's:
    else 422 `amount_mismatch`); `failed` lets the user pay again. A repeated delivery answers 200 with
    `result: duplicate` and changes nothing."""
    body = await request.body()
    settings = runtime.settings
    try:
        payments.verify_signature(
            evently_signature,
            body,
            settings.payment_webhook_secret.get_secret_value(),
            settings.payment_webhook_tolerance_seconds,
        )
        event = PaymentWebhook.model_validate_json(body)
    except AppError as exc:
        log.warning("payment_webhook_refused", reason=exc.code)
        raise
    except ValidationError as exc:
        log.warning("payment_webhook_malformed", errors=exc.error_count())
        raise ValidationFailedError("The webhook body is not a valid payment outcome") from exc
    outcome = await payments.apply_webhook(runtime, event)
    booking = outcome.booking
    return WebhookResult(
        result="applied" if outcome.applied else "duplicate",
        booking_id=booking.id,
        status=booking.status,
        payment_status=booking.payment_status,
    )
