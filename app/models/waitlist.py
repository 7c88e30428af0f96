from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.models.columns import created_at_column, status_column, updated_at_column
from app.models.enums import WaitlistStatus
from app.models.lapsing import Lapsing


class WaitlistEntry(Lapsing, Base):
    LAPSING_STATUS = WaitlistStatus.NOTIFIED

    __tablename__ = "waitlist_entries"
    __table_args__ = (
        Index(
            "uq_waitlist_entries_one_active_per_user_event",
            "user_id",
            "event_id",
            unique=True,
            postgresql_where=text("status IN ('pending', 'notified')"),
        ),
        Index("ix_waitlist_entries_promotion", "event_id", "status", "priority", "joined_at"),
        Index(
            "ix_waitlist_entries_notified_expires_at",
            "expires_at",
            postgresql_where=text("status = 'notified'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("event_availability.event_id"), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=100)
    status: Mapped[WaitlistStatus] = mapped_column(status_column(WaitlistStatus), nullable=False)
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    booked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    booking_id: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}

    @property
    def is_notification_expired(self) -> bool:
        return self.status is WaitlistStatus.EXPIRED or self.lapsed

    @property
    def is_active(self) -> bool:
        return self.status in (WaitlistStatus.PENDING, WaitlistStatus.NOTIFIED) and not self.lapsed
