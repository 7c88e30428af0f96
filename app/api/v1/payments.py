"""The payment provider's callback: open to the provider, authenticated by an HMAC signature."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import ValidationError

from app.api.deps import RuntimeDep
from app.api.v1 import PREFIX
from app.api.v1.responses import PROBLEM
from app.core.errors import AppError
from app.core.logging import get_logger
from app.schemas.payment import PaymentWebhook, WebhookResult
from app.services import payments

log = get_logger(__name__)
router = APIRouter(prefix=f"{PREFIX}/payments", tags=["payments"])


class MalformedWebhookError(AppError):
    status_code = 422
    code = "validation_error"
    title = "Unprocessable Content"


@router.post(
    "/webhook",
    response_model=WebhookResult,
    responses=dict.fromkeys((401, 404, 409, 413, 422, 503), PROBLEM),
    summary="Payment outcome from the provider (signed)",
    description="Header `Evently-Signature: t=<unix seconds>,v1=<hex>`, where `<hex>` is HMAC-SHA256 "
    "with PAYMENT_WEBHOOK_SECRET over `<t>.<raw body>`; timestamps more than "
    "PAYMENT_WEBHOOK_TOLERANCE_SECONDS (300) from now are refused. A repeated delivery answers 200 "
    "with `result: duplicate` and changes nothing.",
)
async def payment_webhook(
    request: Request,
    runtime: RuntimeDep,
    evently_signature: Annotated[str | None, Header(description="t=<unix seconds>,v1=<hex>")] = None,
) -> WebhookResult:
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
        raise MalformedWebhookError("The webhook body is not a valid payment outcome") from exc
    outcome = await payments.apply_webhook(runtime, event)
    booking = outcome.booking
    return WebhookResult(
        result="applied" if outcome.applied else "duplicate",
        booking_id=booking.id,
        status=booking.status,
        payment_status=booking.payment_status,
    )
