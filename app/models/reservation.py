from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.models.columns import created_at_column, status_column, updated_at_column
from app.models.enums import ReservationStatus
from app.models.lapsing import Lapsing


class Reservation(Lapsing, Base):
    """A temporary hold of seats (`/availability/{event_id}/reserve`)."""

    LAPSING_STATUS = ReservationStatus.ACTIVE

    __tablename__ = "reservations"
    __table_args__ = (
        Index(
            "ix_reservations_active_expires_at",
            "expires_at",
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("event_availability.event_id"), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[ReservationStatus] = mapped_column(status_column(ReservationStatus), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    booking_id: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}

    @property
    def is_live(self) -> bool:
        return self.status is ReservationStatus.ACTIVE and not self.lapsed
