"""What the services need from the running application, created once in the lifespan: the
infrastructure (app/db/infrastructure.py) and the services' long-lived parts built on it."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core.security import TokenVerifier
from app.db.infrastructure import Infrastructure
from app.services.availability_cache import AvailabilityCache
from app.services.availability_feed import AvailabilityFeed
from app.services.booking_batcher import BookingBatcher
from app.services.rate_limit import WriteRateLimiter
from app.services.revocation import RevocationChecker
from app.services.stream_limits import StreamLimits
from app.services.unit_of_work import Transactions
from app.services.waiting_line import WaitingLine


@dataclass
class Runtime(Infrastructure):
    tokens: TokenVerifier = field(init=False)
    revocations: RevocationChecker = field(init=False)
    rate_limiter: WriteRateLimiter = field(init=False)
    cache: AvailabilityCache = field(init=False)
    feed: AvailabilityFeed = field(init=False)
    streams: StreamLimits = field(init=False)
    waiting_line: WaitingLine = field(init=False)
    transactions: Transactions = field(init=False)
    batcher: BookingBatcher = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tokens = TokenVerifier(self.settings)
        self.revocations = RevocationChecker(self.settings, self.redis)
        self.rate_limiter = WriteRateLimiter(self.redis, self.settings.rate_limit_per_minute)
        self.cache = AvailabilityCache(self.redis, self.settings.availability_cache_ttl_seconds)
        self.feed = AvailabilityFeed(self.redis)
        self.streams = StreamLimits(self.settings, self.redis, self.revocations)
        self.waiting_line = WaitingLine(self.redis)
        self.transactions = Transactions(self, self.cache, self.feed)
        self.batcher = BookingBatcher(self.transactions, self.settings)
