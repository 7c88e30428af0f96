from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, Integer, Numeric, String, false, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class EventAvailability(Base):
    """An event's seats. The capacity invariant of SPEC section 1 is enforced by the CHECKs."""

    __tablename__ = "event_availability"
    __table_args__ = (
        CheckConstraint(
            "available_capacity + reserved_capacity + confirmed_capacity = total_capacity",
            name="capacity_sums",
        ),
        CheckConstraint("available_capacity >= 0", name="available_non_negative"),
        CheckConstraint("reserved_capacity >= 0", name="reserved_non_negative"),
        CheckConstraint("confirmed_capacity >= 0", name="confirmed_non_negative"),
        CheckConstraint("price >= 0", name="price_non_negative"),
        CheckConstraint("max_tickets_per_user >= 1", name="max_tickets_per_user_positive"),
        CheckConstraint("waiting_room_admit_per_minute >= 1", name="waiting_room_rate_positive"),
        CheckConstraint("waiting_room_admission_minutes >= 1", name="waiting_room_admission_positive"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(BigInteger, unique=True, index=True, nullable=False)
    event_name: Mapped[str] = mapped_column(String(255), nullable=False)
    total_capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    available_capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    reserved_capacity: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    confirmed_capacity: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="USD")
    sales_open: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    event_status: Mapped[str] = mapped_column(String(32), nullable=False, default="published")
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_inbound_digest: Mapped[str | None] = mapped_column(String(64))
    # Seats one buyer may hold or have bought for this event (app/services/buyer_limit.py); None: no limit.
    max_tickets_per_user: Mapped[int | None] = mapped_column(Integer)
    # The virtual waiting room (app/services/waiting_room.py): while enabled, new holds, bookings and
    # waitlist entries need an admission. Changing it does not move `version`: it moves no seats.
    waiting_room_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    waiting_room_admit_per_minute: Mapped[int] = mapped_column(Integer, nullable=False, default=60, server_default="60")
    waiting_room_admission_minutes: Mapped[int] = mapped_column(
        Integer, nullable=False, default=10, server_default="10"
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    last_updated: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )

    @property
    def is_available(self) -> bool:
        return self.sales_open and self.available_capacity > 0

    @property
    def utilization_percentage(self) -> float:
        if self.total_capacity == 0:
            return 0.0
        used = self.reserved_capacity + self.confirmed_capacity
        return round(100.0 * used / self.total_capacity, 2)
