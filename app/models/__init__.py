"""The service's tables; importing this package registers them all on the metadata."""

from app.models.audit import AuditLog
from app.models.booking import Booking
from app.models.enums import BookingStatus, PaymentStatus, ReservationStatus, WaitlistStatus
from app.models.event_availability import EventAvailability
from app.models.idempotency import IdempotencyKey
from app.models.outbox import OutboxMessage
from app.models.reservation import Reservation
from app.models.waitlist import WaitlistEntry

__all__ = [
    "AuditLog",
    "Booking",
    "BookingStatus",
    "EventAvailability",
    "IdempotencyKey",
    "OutboxMessage",
    "PaymentStatus",
    "Reservation",
    "ReservationStatus",
    "WaitlistEntry",
    "WaitlistStatus",
]
