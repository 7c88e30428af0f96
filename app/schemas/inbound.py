"""Messages from the events service (SPEC section 5, inbound)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InboundEventData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int | None = None
    name: str | None = Field(None, max_length=255)
    title: str | None = Field(None, max_length=255)
    capacity: int = Field(ge=0, le=10_000_000)
    price: Decimal = Field(ge=0, le=Decimal("9999999999.99"))
    status: str = Field(max_length=32)
    event_date: datetime | None = None


class InboundEventMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["EventCreated", "EventUpdated", "EventDeleted"]
    event_id: int = Field(ge=1, le=2**63 - 1)
    event_data: InboundEventData | None = None

    @model_validator(mode="after")
    def _data_unless_deleted(self) -> InboundEventMessage:
        if self.type != "EventDeleted" and self.event_data is None:
            raise ValueError(f"{self.type} needs event_data")
        return self
