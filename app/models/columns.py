"""Column helpers shared by the models."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import DateTime, Enum, func
from sqlalchemy.orm import MappedColumn, mapped_column


def status_column(enum: type[StrEnum]) -> Enum:
    return Enum(
        enum,
        native_enum=False,
        length=16,
        create_constraint=True,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
        name=f"{enum.__name__.lower()}",
    )


def created_at_column() -> MappedColumn[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def updated_at_column() -> MappedColumn[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now())
