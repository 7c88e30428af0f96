from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, Numeric, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.models.columns import created_at_column, status_column, updated_at_column
from app.models.enums import BookingStatus, PaymentStatus
from app.models.lapsing import Lapsing

LIVE_BOOKING_STATUSES = (BookingStatus.PENDING, BookingStatus.CONFIRMED)


class Booking(Lapsing, Base):
    LAPSING_STATUS = BookingStatus.PENDING

    __tablename__ = "bookings"
    __table_args__ = (
        Index("ix_bookings_user_id_booking_date", "user_id", text("booking_date DESC")),
        Index("ix_bookings_event_id_status", "event_id", "status"),
        Index(
            "ix_bookings_pending_expires_at",
            "expires_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("event_availability.event_id"), nullable=False)
    booking_reference: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    total_amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="USD")
    status: Mapped[BookingStatus] = mapped_column(status_column(BookingStatus), nullable=False)
    payment_status: Mapped[PaymentStatus] = mapped_column(status_column(PaymentStatus), nullable=False)
    booking_date: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    payment_method: Mapped[str | None] = mapped_column(String(32))
    payment_reference: Mapped[str | None] = mapped_column(String(64), unique=True)
    notes: Mapped[str | None] = mapped_column(Text)
    reservation_id: Mapped[int | None] = mapped_column(BigInteger)
    waitlist_entry_id: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}

    @property
    def is_expired(self) -> bool:
        return self.status is BookingStatus.EXPIRED or self.lapsed

    @property
    def is_active(self) -> bool:
        return self.status in LIVE_BOOKING_STATUSES and not self.lapsed
