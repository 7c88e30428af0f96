from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from app.models.enums import BookingStatus, PaymentStatus
from app.schemas.common import Money, Text, money_sent


class PaymentStart(BaseModel):
    payment_method: Text = Field(min_length=1, max_length=32, examples=["card"])


class PaymentIntent(BaseModel):
    """What the client hands to the payment provider."""

    booking_id: int
    booking_reference: str
    payment_reference: str
    payment_method: str
    payment_status: PaymentStatus
    amount: Money
    currency: str


class PaymentOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PaymentWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore")

    payment_reference: Text = Field(min_length=1, max_length=64)
    outcome: PaymentOutcome
    amount: Decimal = Field(ge=0, le=Decimal("9999999999.99"), json_schema_extra=money_sent)
    currency: Text = Field(pattern=r"^[A-Z]{3}$")


class WebhookResult(BaseModel):
    result: str = Field(description="`applied`, or `duplicate` when this delivery changed nothing")
    booking_id: int
    status: BookingStatus
    payment_status: PaymentStatus
