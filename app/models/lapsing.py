"""When a row has lapsed: it is still in its entity's lapsing status, and its `expires_at` has passed.

The rule is said once, here. `Model.lapsed` is the SQL expression (the sweeper's and the reads'
queries), `row.lapsed` the same rule on a loaded row (the models' properties, the services).
A lapsed row is live in the database until someone expires it: the sweeper, or the first request
that meets it (SPEC section 3, expiry on read).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import ColumnElement, and_
from sqlalchemy.ext.hybrid import hybrid_property

from app.core.clock import clock

if TYPE_CHECKING:
    from sqlalchemy.orm import Mapped


class Lapsing:
    """Mixed into a model of seats held for a while (a booking, a hold, a waitlist entry): a row
    of an event, with a quantity, and a `status` that lapses at `expires_at`."""

    LAPSING_STATUS: ClassVar[StrEnum]

    if TYPE_CHECKING:
        id: Mapped[int]
        event_id: Mapped[int]
        quantity: Mapped[int]
        status: Mapped[Any]
        expires_at: Mapped[datetime | None]
        updated_at: Mapped[datetime]

    @hybrid_property
    def lapsed(self) -> bool:
        return self.status is self.LAPSING_STATUS and self.expires_at is not None and self.expires_at <= clock.now()

    @lapsed.inplace.expression
    @classmethod
    def _lapsed_expression(cls) -> ColumnElement[bool]:
        return and_(cls.status == cls.LAPSING_STATUS, cls.expires_at <= clock.now())
