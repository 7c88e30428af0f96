"""The hot path: new bookings waiting in this instance share one transaction.

Requests queue in-process; one drainer takes everything waiting (up to `BOOKING_BATCH_MAX`),
takes the locks of the free events among them once (requests for those events that queue while
it waits for them join the batch), and books the whole batch in one transaction:
the events read with an id for each request, then one statement: the version-checked capacity
`UPDATE` covering every event of the batch, with its bookings, audit rows and outbox messages
inserted beside it (an array parameter per column), then the commit.
Each request still gets its own answer. This is how a hot event gets past the per-row commit
ceiling of one booking per transaction, and how many quiet events share round trips
(see bench/README.md).

Seats go to requests in arrival order; a request that does not fit in what is left is refused
with `insufficient_capacity` while smaller ones behind it may still fit.

An event whose lock another writer holds (another instance's Redis lock, or this instance's turn)
does not hold up the batch's other events: they are booked after a brief wait for its Redis lock at
most (`BRIEF_WAIT_SECONDS` in app/db/lock.py), and its requests go first into the next batch, again
and again, until they get its lock or `LOCK_WAIT_SECONDS` have passed since they first met it (then
`lock_timeout`, for them alone). Only a batch with no free event waits longer for a lock, and only
until a request for another event arrives.

A batch that fails on a value PostgreSQL cannot take (a data error) failed for one of its requests,
not for all: it is split in halves and each half booked again, down to the request(s) at fault,
which alone are refused. Only failures cost the extra transactions; the fast path is unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice

from opentelemetry.trace import SpanContext
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError, StatementError

from app.core import metrics, tracing
from app.core.config import Settings
from app.core.errors import (
    AppError,
    InsufficientCapacityError,
    LockTimeoutError,
    NotFoundError,
    SalesClosedError,
    UnstorableValueError,
    VersionConflictError,
)
from app.core.logging import get_logger
from app.db.lock import Patience
from app.db.queries import any_of
from app.models.event_availability import EventAvailability
from app.schemas.booking import BookingRead
from app.services import admission, audit, buyer_limit, idempotency, outbox
from app.services.admission import AdmissionPass
from app.services.audit import Actor
from app.services.booking_rows import (
    BOOKINGS,
    amount_out_of_range,
    booking_row,
    most_seats_storable,
    new_booking_ids,
    payment_deadline,
)
from app.services.expiry import release_lapsed_holds
from app.services.lifecycles import BOOKING
from app.services.seats import take_seats
from app.services.unit_of_work import Transactions, UnitOfWork

log = get_logger(__name__)

HOT_MEMORY_SECONDS = 1.0
BOOK = BOOKING.transition("book", None)
EMPTY_BOOKING = dict.fromkeys(BOOKINGS.c.keys())

# The batch's events as read (and, for several events, locked in event order), with an id for each
# of its requests drawn from the bookings' sequence in the same round trip.
READ_EVENTS = (
    select(EventAvailability, new_booking_ids(bindparam("id_count")).label("booking_ids"))
    .where(any_of(EventAvailability.event_id, "event_ids"))
    .order_by(EventAvailability.event_id)
    .execution_options(populate_existing=True)
)
READ_EVENTS_LOCKED = READ_EVENTS.with_for_update(key_share=True)


@dataclass
class BookingRequest:
    actor: Actor
    user_id: int
    event_id: int
    quantity: int
    payment_method: str | None = None
    notes: str | None = None
    claim: idempotency.Claim | None = None
    admission: AdmissionPass | None = None
    # Taken from the submitting request's context: the batch runs in a task of its own.
    request_id: str | None = field(default_factory=audit.current_request_id)
    span_context: SpanContext | None = field(default_factory=tracing.current_span_context)  # to link its batch
    # When it stops waiting for its event's lock: LOCK_WAIT_SECONDS after its first batch.
    lock_deadline: float | None = None
    future: asyncio.Future[BookingRead] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class _EventBusy:
    """The outcome of a request whose event another writer holds: it waits for a later batch."""


EVENT_BUSY = _EventBusy()
Outcome = BookingRead | Exception | _EventBusy


class BookingBatcher:
    def __init__(self, transactions: Transactions, settings: Settings) -> None:
        self._transactions = transactions
        self._settings = settings
        self._queue: deque[BookingRequest] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._busy_until = 0.0
        # The events of a batch waiting for a busy event, and what ends its wait early: a request
        # for another event, which the next batch can book instead of queueing behind it.
        self._waiting_at: frozenset[int] = frozenset()
        self._other_event_queued = asyncio.Event()

    async def submit(self, request: BookingRequest) -> BookingRead:
        self._queue.append(request)
        if request.event_id not in self._waiting_at:
            self._other_event_queued.set()
        if self._drainer is None:
            # A fresh context: the batch must not carry the first request's id (its logs, audit rows).
            self._drainer = asyncio.create_task(self._drain(), context=contextvars.Context())
        # Shielded: a client that goes away must not cancel the batch it is part of.
        return await asyncio.shield(request.future)

    async def close(self) -> None:
        """Wait for the batch in flight (graceful shutdown)."""
        if self._drainer is not None:
            await asyncio.gather(self._drainer, return_exceptions=True)

    async def _drain(self) -> None:
        settings = self._settings
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if len(self._queue) < settings.booking_batch_max and self._busy_until > loop.time():
                    # Under load, the clients answered by the last batch are about to come back:
                    # a short wait lets them share this transaction instead of the next one.
                    await asyncio.sleep(settings.booking_batch_linger_ms / 1000)
                size = min(len(self._queue), settings.booking_batch_max)
                batch = [self._queue.popleft() for _ in range(size)]
                if size > 1:
                    self._mark_busy()
                busy: list[BookingRequest] = []
                try:
                    with tracing.batch_span(size, (request.span_context for request in batch)):
                        busy = await self._process(batch)
                except Exception as exc:  # never leave a client waiting, and keep draining
                    log.exception("booking_batch_failed", size=len(batch))
                    busy = []  # answered here with the rest, not queued again
                    for request in batch:
                        _settle(request, exc)
                self._wait_again(busy)
        finally:
            self._drainer = None

    async def rehearse(self, uow: UnitOfWork, event_ids: Sequence[int], made_up_ids: Iterator[int]) -> None:
        """Book in `uow` as batches do: a seat of the first event alone (a batch of one event reads
        its row as it is), then a seat of each (a batch of several locks their rows first), by the
        service itself for user 0, the bookings' ids taken from `made_up_ids`. For a warm-up
        (app/services/warm_up.py): the events, named in `uow.locked_events`, must be seen by no other
        transaction (made in this one), and the unit must be rolled back."""
        for events in (event_ids[:1], event_ids):
            requested = {event_id: [BookingRequest(Actor.system(), 0, event_id, 1)] for event_id in events}
            for outcome in (await self._book(uow, requested, made_up_ids=made_up_ids)).values():
                if not isinstance(outcome, BookingRead):
                    raise RuntimeError(f"a rehearsed booking was refused: {outcome!r}")

    def _mark_busy(self) -> None:
        """A batch of several requests: the instance is under load for the next second."""
        self._busy_until = asyncio.get_running_loop().time() + HOT_MEMORY_SECONDS

    async def _process(self, batch: list[BookingRequest]) -> list[BookingRequest]:
        """Answer the batch's requests, but for those whose event was busy: returned, unanswered."""
        outcomes = await self._attempt(batch, latecomers_join=True)
        refused = [r for r in batch if isinstance(outcomes[id(r)], InsufficientCapacityError)]
        if refused and await self._released_lapsed({r.event_id for r in refused}):
            # Seats held by lapsed holds came back: the refused requests get a second look. A
            # refusal stands if their event turned busy meanwhile.
            second_look = await self._attempt(refused)
            outcomes.update((key, outcome) for key, outcome in second_look.items() if outcome is not EVENT_BUSY)
        busy: list[BookingRequest] = []
        for request in batch:
            outcome = outcomes[id(request)]
            if isinstance(outcome, _EventBusy):
                busy.append(request)
            else:
                _settle(request, outcome)
        return busy

    def _wait_again(self, busy: list[BookingRequest]) -> None:
        """Requests whose event was busy go first in the next batch, in arrival order, unless their
        time to wait for its lock is over (or within a poll of it: no batch for one poll's wait)."""
        soon = asyncio.get_running_loop().time() + self._settings.lock_poll_seconds
        again: list[BookingRequest] = []
        timed_out: list[BookingRequest] = []
        for request in busy:
            waits_on = request.lock_deadline is not None and request.lock_deadline > soon
            (again if waits_on else timed_out).append(request)
        for request in timed_out:
            _settle(request, LockTimeoutError(request.event_id))
        metrics.LOCK_ACQUISITIONS.labels("timeout").inc(len({request.event_id for request in timed_out}))
        self._queue.extendleft(reversed(again))

    def _patience(self, batch: list[BookingRequest], event_ids: Iterable[int]) -> Patience:
        """How long the batch may wait for its events when none is free: until the earliest lock
        deadline of its requests (each request's clock starts here, at the first batch it is in), or
        until a request for another event arrives (what `submit` signals from now on)."""
        now = asyncio.get_running_loop().time()
        for request in batch:
            if request.lock_deadline is None:
                request.lock_deadline = now + self._settings.lock_wait_seconds
        self._waiting_at = frozenset(event_ids)
        self._other_event_queued.clear()
        if any(request.event_id not in self._waiting_at for request in self._queue):
            self._other_event_queued.set()
        deadlines = [request.lock_deadline for request in batch if request.lock_deadline is not None]
        return Patience(min(deadlines), self._other_event_queued)

    async def _released_lapsed(self, event_ids: set[int]) -> bool:
        """Expire the events' lapsed holds; a failure here only means no second look."""
        try:
            return await release_lapsed_holds(self._transactions, event_ids) > 0
        except Exception:
            log.warning("lapsed_holds_not_released", event_ids=sorted(event_ids), exc_info=True)
            return False

    async def _attempt(self, batch: list[BookingRequest], *, latecomers_join: bool = False) -> dict[int, Outcome]:
        """Book the batch: each request's booking or refusal; a failure is every request's outcome."""
        by_event: dict[int, list[BookingRequest]] = {}
        for request in batch:
            by_event.setdefault(request.event_id, []).append(request)

        take_latecomers = latecomers_join

        async def book_with_latecomers(uow: UnitOfWork) -> dict[int, Outcome]:
            nonlocal take_latecomers
            if take_latecomers:  # at the first attempt only: a retry books the same requests again
                self._take_latecomers(batch, by_event, uow.locked_events)
                take_latecomers = False
            return await self._book(uow, by_event)

        patience = self._patience(batch, by_event)
        try:
            outcomes = await self._transactions.locked_where_free(list(by_event), book_with_latecomers, patience)
        except Exception as exc:
            failure: Exception = exc
            if is_data_error(exc):
                if len(batch) > 1:
                    return await self._isolate(batch, exc)
                failure = UnstorableValueError("A value in the request cannot be stored")
                failure.__cause__ = exc
                log.warning("booking_value_refused", sqlstate=getattr(getattr(exc, "orig", None), "sqlstate", None))
            elif not isinstance(exc, AppError):
                log.exception("booking_batch_failed", size=len(batch))
            return {id(request): failure for request in batch}
        if any(outcome is not EVENT_BUSY for outcome in outcomes.values()):  # it had an event to book
            metrics.BOOKING_BATCH_SIZE.observe(sum(isinstance(outcome, BookingRead) for outcome in outcomes.values()))
        return outcomes

    def _take_latecomers(
        self, batch: list[BookingRequest], by_event: dict[int, list[BookingRequest]], locked: frozenset[int]
    ) -> None:
        """Move the requests that queued for the batch's `locked` events while it waited for them into
        it, in arrival order, up to `BOOKING_BATCH_MAX`: it is this instance's turn at those events
        now, and they would otherwise wait for its whole transaction and then another. `batch` grows
        in place: its caller answers all of it."""
        limit = self._settings.booking_batch_max
        if len(batch) >= limit or not self._queue:
            return
        waiting = list(self._queue)
        self._queue.clear()
        joined: list[BookingRequest] = []
        for request in waiting:
            same_event = by_event.get(request.event_id) if request.event_id in locked else None
            if same_event is None or len(batch) + len(joined) >= limit:
                self._queue.append(request)
            else:
                same_event.append(request)
                joined.append(request)
        if joined:
            batch.extend(joined)
            self._mark_busy()
            tracing.batch_joined(len(batch), (request.span_context for request in joined))

    async def _isolate(self, batch: list[BookingRequest], exc: Exception) -> dict[int, Outcome]:
        """The data error belongs to some request(s) of the batch: book each half on its own, in
        arrival order, so only the request(s) at fault are refused (2 log2(n) transactions for one)."""
        log.warning("booking_batch_split", size=len(batch), error_type=type(exc).__name__)
        metrics.BOOKING_BATCH_SPLITS.inc()
        middle = len(batch) // 2
        outcomes = await self._attempt(batch[:middle])
        outcomes.update(await self._attempt(batch[middle:]))
        return outcomes

    async def _book(
        self, uow: UnitOfWork, requested: dict[int, list[BookingRequest]], *, made_up_ids: Iterator[int] | None = None
    ) -> dict[int, Outcome]:
        """Book what the unit's locked events can give; the bookings' ids are drawn from their
        sequence with the events' read, or taken from `made_up_ids` (a rehearsal: no id drawn)."""
        outcomes: dict[int, Outcome] = {
            id(request): EVENT_BUSY
            for event_id, requests in requested.items()
            if event_id not in uow.locked_events
            for request in requests
        }
        by_event = {event_id: requests for event_id, requests in requested.items() if event_id in uow.locked_events}
        if not by_event:
            return outcomes
        # Several events: their rows are locked now, in event order, against deadlocks. A single
        # (hot) event's row is locked only by the capacity UPDATE at the end, for the least time.
        read = READ_EVENTS_LOCKED if len(by_event) > 1 else READ_EVENTS
        size = sum(len(requests) for requests in by_event.values())
        drawn = size if made_up_ids is None else 0
        read_rows = (await uow.session.execute(read, {"event_ids": list(by_event), "id_count": drawn})).all()
        events = {event.event_id: event for event, _ in read_rows}
        if made_up_ids is None:
            booking_ids: list[int] = read_rows[0].booking_ids if read_rows else []
        else:
            booking_ids = list(islice(made_up_ids, size))
        buyers = [(request.event_id, request.user_id) for requests in by_event.values() for request in requests]
        allowance = await buyer_limit.allowance_for(uow.session, events.values(), buyers)
        accepted: list[tuple[BookingRequest, EventAvailability]] = []
        for event_id, requests in by_event.items():
            event = events.get(event_id)
            for request, error in zip(requests, _allocate(event, event_id, requests, allowance, uow.now), strict=True):
                if error is not None:
                    outcomes[id(request)] = error
                elif event is not None:
                    accepted.append((request, event))
        if accepted:
            bookings = _new_bookings(uow, accepted, booking_ids)
            _record(uow, [request for request, _ in accepted], bookings)
            # The bookings, their audit rows and messages are written by the capacity UPDATE's
            # statement, the last before the commit: the hot row stays locked from it to the
            # commit only.
            await take_seats(uow, _totals(events, accepted))
            outcomes.update((id(request), booking) for (request, _), booking in zip(accepted, bookings, strict=True))
        return outcomes


def _allocate(
    event: EventAvailability | None,
    event_id: int,
    requests: list[BookingRequest],
    allowance: buyer_limit.Allowance,
    now: datetime,
) -> list[AppError | None]:
    """Seats in arrival order; `None` marks a request that gets a booking."""
    if event is None:
        return [NotFoundError(f"Event {event_id} has no availability") for _ in requests]
    if not event.sales_open:
        return [SalesClosedError(f"Sales for event {event_id} are closed") for _ in requests]
    available = event.available_capacity
    storable = most_seats_storable(event)
    errors: list[AppError | None] = []
    for request in requests:
        error = _refusal(event, request, available, storable, allowance, now)
        if error is None:
            available -= request.quantity
        errors.append(error)
    return errors


def _refusal(
    event: EventAvailability,
    request: BookingRequest,
    available: int,
    storable: int | float,
    allowance: buyer_limit.Allowance,
    now: datetime,
) -> AppError | None:
    """Why `request` gets no seats of `event` with `available` left; None when it gets them."""
    not_admitted = admission.refusal(event, request.user_id, request.admission, now)
    if not_admitted:
        return not_admitted
    if request.quantity > storable:  # its amount could not be stored: refused before the INSERT
        return amount_out_of_range(event, request.quantity)
    if request.quantity > available:
        return InsufficientCapacityError(available)
    return allowance.refusal(event, request.user_id, request.quantity)  # last: it counts what it allows


def _new_bookings(
    uow: UnitOfWork, accepted: list[tuple[BookingRequest, EventAvailability]], booking_ids: list[int]
) -> list[BookingRead]:
    """The accepted requests' bookings, to be inserted with the unit's records (no ORM: this runs
    for every booking); each row complete, so it is the booking's answer as it will be stored."""
    expires_at = payment_deadline(uow.settings, uow.now)
    rows = [
        EMPTY_BOOKING
        | booking_row(r.user_id, event, r.quantity, uow.now, expires_at, payment_method=r.payment_method, notes=r.notes)
        | {"id": booking_id, "status": BOOK.target}
        for (r, event), booking_id in zip(accepted, booking_ids[: len(accepted)], strict=True)
    ]
    uow.insert(BOOKINGS, rows)
    for event_id in {event.event_id for _, event in accepted}:
        uow.holds_until(event_id, expires_at)
    # A new pending booking is active and not expired.
    return [BookingRead.model_validate({**row, "is_active": True, "is_expired": False}) for row in rows]


def _record(uow: UnitOfWork, accepted: list[BookingRequest], bookings: list[BookingRead]) -> None:
    """What `BOOK` declares, for each booking: from the batch's own rendering of it (a request each)."""
    assert BOOK.action is not None and BOOK.message is not None
    for request, booking in zip(accepted, bookings, strict=True):
        answer = booking.model_dump(mode="json")
        message = outbox.booking_message_of(BOOK.message, answer, uow.now)
        after = message["booking_data"]  # the message schema's description, as every audit row of a booking
        uow.audit(request.actor, BOOK.action, "booking", booking.id, after=after, request_id=request.request_id)
        uow.publish(message)
        uow.answer(request.claim, 201, answer)


def _totals(
    events: dict[int, EventAvailability], accepted: list[tuple[BookingRequest, EventAvailability]]
) -> list[tuple[EventAvailability, int]]:
    """The seats the batch takes, per event as read at its start."""
    totals: dict[int, int] = {}
    for request, event in accepted:
        totals[event.event_id] = totals.get(event.event_id, 0) + request.quantity
    return [(events[event_id], total) for event_id, total in totals.items()]


def is_data_error(exc: BaseException) -> bool:
    """A failure caused by a value in the statement (SQLSTATE class 22, e.g. numeric overflow or
    text asyncpg cannot encode), as opposed to conflicts, deadlocks or a lost connection."""
    if isinstance(exc, DBAPIError):
        return not exc.connection_invalidated and str(getattr(exc.orig, "sqlstate", "") or "").startswith("22")
    if isinstance(exc, StatementError):  # a value SQLAlchemy itself could not bind
        return isinstance(exc.orig, UnicodeError)
    return isinstance(exc, UnicodeError)


def _settle(request: BookingRequest, outcome: BookingRead | BaseException) -> None:
    if request.future.done():
        return
    if isinstance(outcome, BookingRead):
        metrics.BOOKINGS.labels("created").inc()
        request.future.set_result(outcome)
    else:
        label = "insufficient_capacity" if isinstance(outcome, InsufficientCapacityError) else "error"
        if isinstance(outcome, VersionConflictError):
            label = "conflict"
        metrics.BOOKINGS.labels(label).inc()
        request.future.set_exception(outcome)
