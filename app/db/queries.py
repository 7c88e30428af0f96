"""Small query-building helpers shared by the services."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute


def where_equal(query: Select[Any], conditions: dict[InstrumentedAttribute[Any], Any]) -> Select[Any]:
    """Add `column = value` for every condition whose value is given (not None)."""
    for column, value in conditions.items():
        if value is not None:
            query = query.where(column == value)
    return query
