"""The unit of work: every change of state goes through one, in one PostgreSQL transaction.

An operation gets a `UnitOfWork` and says through it what its change leaves behind besides the
rows it writes: audit rows (`audit`), lifecycle messages for the outbox (`publish`), the answer
an `Idempotency-Key` will replay (`answer`), the events whose seat counters moved (`moved`, said
by app/services/seats.py) and when the holds it made lapse (`holds_until`). `Transactions` runs
the operation: the events' Redis locks, the transaction, its retries (each attempt with a fresh
unit), the unit's records written last, the commit, and after it the availability cache, the
live feed and the outbox relay's wake-up. Nothing travels in the session's `info`.

An operation that meets a lapsed row expires it and raises `RefuseAfterCommit`: the expiry is
committed, then the request is refused (the one policy for lapsed rows, app/services/changes.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Result, Table, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.sql.dml import UpdateBase
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from app.core import metrics
from app.core.clock import clock
from app.core.config import Settings
from app.core.errors import AppError, VersionConflictError
from app.core.logging import get_logger
from app.db.bulk_insert import insert_rows, with_new_rows
from app.db.infrastructure import Infrastructure
from app.db.lock import Patience
from app.db.queries import any_of
from app.db.redis import RedisUnavailable
from app.models.event_availability import EventAvailability
from app.schemas.availability import EventAvailabilityRead
from app.services.audit import AUDIT_TABLE, Actor, audit_row, current_request_id
from app.services.availability_cache import AvailabilityCache
from app.services.availability_feed import AvailabilityFeed
from app.services.idempotency import STORE_ANSWER, Claim, answer_of
from app.services.keyed_batches import KeyedBatches
from app.services.outbox import OUTBOX_TABLE, outbox_row

T = TypeVar("T")
X = TypeVar("X")
S = TypeVar("S", bound=UpdateBase)
log = get_logger(__name__)


Operation = Callable[["UnitOfWork"], Awaitable[T]]


class StaleVersion(Exception):
    """An event's row changed since it was read; the transaction is run again."""


class RefuseAfterCommit(Exception):
    """Commit what the operation did (the expiry of a lapsed row), then answer `refusal`.

    A unit without the event's lock cannot move seats: it names the expiry to run `then_locked`
    instead, in a unit of its own under the event's lock, before the refusal is answered. Raised
    before anything else is changed: the refusal is the request's answer, so the unit's own
    idempotent answer, if any, is dropped."""

    def __init__(self, refusal: AppError, then_locked: tuple[int, Operation[object]] | None = None) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal
        self.then_locked = then_locked


@dataclass
class UnitOfWork:
    session: AsyncSession
    settings: Settings
    now: datetime = field(default_factory=clock.now)
    locked_events: frozenset[int] = frozenset()  # the events whose locks it holds: only their seats move
    request_id: str | None = field(default_factory=current_request_id)  # its audit rows' default
    # The latest rows of the events whose counters moved, and the earliest lapse of the holds made,
    # per event; `figures` are those rows rendered when the unit finished, for after the commit
    # (the cache, the live feed), when the rows themselves may be gone with their session.
    events: dict[int, EventAvailability] = field(default_factory=dict, init=False)
    hold_expiries: dict[int, datetime] = field(default_factory=dict, init=False)
    figures: list[dict[str, Any]] = field(default_factory=list, init=False)
    published: bool = field(default=False, init=False)
    _audit_rows: list[dict[str, Any]] = field(default_factory=list, init=False)
    _messages: list[dict[str, Any]] = field(default_factory=list, init=False)
    _answers: list[dict[str, Any]] = field(default_factory=list, init=False)
    _new_rows: dict[Table, list[dict[str, Any]]] = field(default_factory=dict, init=False)

    def check_locked(self, event_id: int) -> None:
        """Seats move only under their event's lock."""
        if event_id not in self.locked_events:
            raise RuntimeError(f"seats of event {event_id} moved without its lock")

    def audit(
        self,
        actor: Actor,
        action: str,
        entity_type: str,
        entity_id: int,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
    ) -> None:
        """An audit row; `request_id` defaults to the current request's."""
        request_id = request_id or self.request_id
        row = audit_row(actor, action, entity_type, entity_id, self.now, before, after, request_id=request_id)
        self._audit_rows.append(row)

    def publish(self, *messages: dict[str, Any]) -> None:
        """Lifecycle messages (app/services/outbox.py builds them), sent by the relay after the commit."""
        self._messages.extend(messages)

    def answer(self, claim: Claim | None, status_code: int, body: Any) -> None:
        """What a retry with the request's `Idempotency-Key` gets, committed with the change."""
        if claim is not None:
            self._answers.append(answer_of(claim, status_code, body))

    def insert(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """New rows (complete, keys included), written with the unit's records in one statement."""
        self._new_rows.setdefault(table, []).extend(rows)

    def moved(self, event: EventAvailability) -> None:
        self.events[event.event_id] = event

    def holds_until(self, event_id: int, expires_at: datetime) -> None:
        current = self.hold_expiries.get(event_id)
        self.hold_expiries[event_id] = expires_at if current is None else min(current, expires_at)

    async def write(self) -> None:
        """Insert the rows and records made so far, all tables in one statement, and store the
        idempotent answers. The runner calls it last, before the commit."""
        new_rows = self._take_new_rows()
        if new_rows:
            statement, params = insert_rows(new_rows)
            await self.session.execute(statement, params)
        if self._answers:
            await self.session.execute(STORE_ANSWER, self._answers)
            self._answers = []

    async def execute_writing(self, statement: S, params: dict[str, Any]) -> Result[Any]:
        """Execute `statement` (made once, not per call), inserting the rows and records made so
        far in the same round trip (app/db/bulk_insert.py)."""
        new_rows = self._take_new_rows()
        if new_rows:
            statement, rows_params = with_new_rows(statement, new_rows)
            params = params | rows_params
        return await self.session.execute(statement, params)

    def _take_new_rows(self) -> dict[Table, list[dict[str, Any]]]:
        new_rows = {
            **self._new_rows,
            AUDIT_TABLE: self._audit_rows,
            OUTBOX_TABLE: [outbox_row(message, self.now) for message in self._messages],
        }
        self.published = self.published or bool(self._messages)
        self._audit_rows, self._messages, self._new_rows = [], [], {}
        return {table: rows for table, rows in new_rows.items() if rows}

    async def finish(self, refused: bool = False) -> None:
        """The runner's last word before the commit: the records written, the figures rendered."""
        if refused:
            self._answers = []
        await self.write()
        self.figures = [EventAvailabilityRead.model_validate(e).model_dump(mode="json") for e in self.events.values()]


class Transactions:
    """Runs operations as units of work, with or without the events' locks."""

    def __init__(self, infrastructure: Infrastructure, cache: AvailabilityCache, feed: AvailabilityFeed) -> None:
        self._infrastructure = infrastructure
        self._settings = infrastructure.settings
        self._cache = cache
        self._feed = feed
        self._on_published: list[Callable[[], None]] = []
        most = infrastructure.settings.booking_batch_max
        self._groups: KeyedBatches[int, _Grouped[Any], Any] = KeyedBatches(self._run_locked_group, most)
        self._unlocked_groups: KeyedBatches[int, _Grouped[Any], Any] = KeyedBatches(self._run_unlocked_group, most)

    def on_published(self, wake: Callable[[], None]) -> None:
        """Call `wake` after each commit that wrote lifecycle messages (the outbox relay)."""
        self._on_published.append(wake)

    async def read(self, query: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `query` on the primary, outside any unit of work (reads before a change)."""
        async with self._infrastructure.sessionmaker() as session:
            return await query(session)

    async def locked(self, event_ids: int | Sequence[int], operation: Operation[T]) -> T:
        """Run `operation` in one transaction under the events' locks, retrying stale versions.

        The transaction starts by locking the events' rows in event order, before touching any
        booking, hold or waitlist row. Every writer taking its rows in that one order
        is what keeps PostgreSQL free of deadlocks when the Redis lock is not there to serialise
        them (Redis down, or one instance's breaker open while another's is closed).
        """
        ids = sorted({event_ids} if isinstance(event_ids, int) else set(event_ids))

        async def rows_locked_first(uow: UnitOfWork) -> T:
            await _lock_rows(uow.session, ids)
            return await operation(uow)

        async with self._session_under_all_locks(ids) as session:
            uow, result = await self._retrying(lambda: self._attempt(session, rows_locked_first, frozenset(ids)))
        # After the lock: the cache compares versions, so the order writers get here in is harmless.
        return await self._after_commit(uow, result)

    async def locked_where_free(self, event_ids: Sequence[int], operation: Operation[T], patience: Patience) -> T:
        """Run `operation` in one transaction under the locks (this instance's turn and the Redis
        lock) of those events that are free now: `uow.locked_events` names them, and only their
        seats may move. Retries stale versions. When none is free it waits as long as `patience`
        lasts, and runs with no event locked if none came free (app/db/lock.py:
        `EventLocks.free_turn`, `free_event_locks`)."""
        locks = self._infrastructure.locks

        def free_redis_locks(ours: Sequence[int]) -> AbstractAsyncContextManager[frozenset[int]]:
            return locks.free_across_instances(ours, patience)

        free_turn = locks.free_turn(event_ids, patience)
        async with self._session_under_locks(free_turn, free_redis_locks) as (session, held):
            uow, result = await self._retrying(lambda: self._attempt(session, operation, held))
        return await self._after_commit(uow, result)

    @asynccontextmanager
    async def _session_under_all_locks(self, event_ids: Sequence[int]) -> AsyncIterator[AsyncSession]:
        """A session under every given event's turn and Redis lock (`_session_under_locks`)."""
        locks = self._infrastructure.locks
        async with self._session_under_locks(locks.turn(event_ids), locks.across_instances) as (session, _):
            yield session

    @asynccontextmanager
    async def _session_under_locks(
        self,
        turn: AbstractAsyncContextManager[Sequence[int]],
        redis_locks: Callable[[Sequence[int]], AbstractAsyncContextManager[X]],
    ) -> AsyncIterator[tuple[AsyncSession, X]]:
        """A session under this instance's `turn` at the events and the `redis_locks` of the events
        it yields (with what they yield). Its connection is taken from the pool (and checked: one
        round trip) after the turn and before the Redis locks: those are held for the transaction
        alone, and no more than one connection per event and instance waits for them (waiting for
        the turn holds none)."""
        infrastructure = self._infrastructure
        async with (
            turn as ours,
            infrastructure.engine.connect() as connection,
            infrastructure.sessionmaker(bind=connection) as session,
            redis_locks(ours) as held,
        ):
            yield session, held

    async def unlocked(self, operation: Operation[T]) -> T:
        """Run `operation` in one transaction that moves no seats: no event lock, no event row lock
        (SPEC section 2 asks them of capacity changes only), so it never queues behind an event's
        bookings. It locks the rows it changes itself, and only those: holding no other lock while
        it waits, it cannot take part in a deadlock."""
        async with self._infrastructure.sessionmaker() as session:
            uow, result = await self._retrying(lambda: self._attempt(session, operation, frozenset()))
        return await self._after_commit(uow, result)

    async def rehearse(self, operation: Operation[object], locked_events: frozenset[int], connections: int) -> None:
        """Run `operation` as a unit of work on each of `connections` pooled connections, one after
        another, each in a transaction rolled back: no row it writes stays (the sequences it draws
        from move on) and nothing is announced. What stays is what a first run leaves: its
        statements compiled, and on each connection PostgreSQL's caches of the tables it touched and
        its statements prepared (app/services/warm_up.py). No lock is taken: the `locked_events`
        must be seen by no other transaction (made by `operation` itself)."""
        infrastructure = self._infrastructure
        async with AsyncExitStack() as held:  # each connection stays checked out: the next is another
            for _ in range(connections):
                connection = await held.enter_async_context(infrastructure.engine.connect())
                async with infrastructure.sessionmaker(bind=connection) as session:
                    transaction = await session.begin()
                    try:
                        uow = UnitOfWork(session, self._settings, locked_events=locked_events)
                        await operation(uow)
                        await uow.finish()
                    finally:
                        await transaction.rollback()

    async def _retrying(self, attempt: Callable[[], Awaitable[X]]) -> X:
        """Run `attempt` (a whole transaction) again on a stale version, a deadlock or a
        serialisation failure, a bounded number of times, then answer 409 `version_conflict`."""
        try:
            async for retry in AsyncRetrying(
                stop=stop_after_attempt(self._settings.version_conflict_retries + 1),
                wait=wait_random_exponential(multiplier=0.005, max=0.1),
                retry=retry_if_exception(is_transient),
                before_sleep=lambda _state: metrics.VERSION_CONFLICT_RETRIES.inc(),
                reraise=True,
            ):
                with retry:
                    return await attempt()
        except (DBAPIError, StaleVersion, StaleDataError) as exc:
            if is_transient(exc):  # still stale, deadlocked or serialisation-failed after every retry
                raise VersionConflictError("The event changed concurrently; please retry") from exc
            raise
        raise AssertionError("unreachable: the retry loop returns or raises")

    async def _attempt(
        self, session: AsyncSession, operation: Operation[T], locked_events: frozenset[int]
    ) -> tuple[UnitOfWork, T | RefuseAfterCommit]:
        uow = UnitOfWork(session, self._settings, locked_events=locked_events)
        async with session.begin():
            result: T | RefuseAfterCommit
            try:
                result = await operation(uow)
            except RefuseAfterCommit as refused:
                result = refused
            await uow.finish(refused=isinstance(result, RefuseAfterCommit))
        return uow, result

    async def _after_commit(self, uow: UnitOfWork, result: T | RefuseAfterCommit) -> T:
        await self._announce([uow])
        return await self._outcome(result)

    async def _outcome(self, result: T | RefuseAfterCommit) -> T:
        if isinstance(result, RefuseAfterCommit):
            if result.then_locked is not None:
                await self._expire_after(*result.then_locked)
            raise result.refusal
        return result

    async def _expire_after(self, event_id: int, expiry: Operation[object]) -> None:
        """The deferred expiry of a lapsed row; if it fails, the sweeper will expire the row, and
        the request still gets its refusal."""
        try:
            await self.locked(event_id, expiry)
        except Exception:
            log.warning("deferred_expiry_failed", event_id=event_id, exc_info=True)

    async def _announce(self, uows: Sequence[UnitOfWork]) -> None:
        """After the commit: wake the relay for the messages written, and send the moved events'
        latest figures to the cache and the live feed, in one round trip."""
        if any(uow.published for uow in uows):
            for wake in self._on_published:
                wake()
        figures: dict[int, dict[str, Any]] = {}
        expiries: dict[int, datetime] = {}
        for uow in uows:  # in commit order: the last figures of an event are its latest
            figures |= {rendered["event_id"]: rendered for rendered in uow.figures}
            for event_id, expires_at in uow.hold_expiries.items():
                expiries[event_id] = min(expires_at, expiries.get(event_id, expires_at))
        if figures:
            await self._refresh(list(figures.values()), expiries)

    async def _refresh(self, updates: list[dict[str, Any]], expiries: dict[int, datetime]) -> None:
        stores: list[tuple[dict[str, Any], datetime | float | None]] = [
            (rendered, expiries.get(rendered["event_id"])) for rendered in updates
        ]

        async def send(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            await self._cache.queue_stores(pipe, stores)
            self._feed.queue_publish(pipe, updates)
            await pipe.execute()

        try:
            await self._infrastructure.redis.call("availability_refresh", send)
        except RedisUnavailable:  # the commit stands; the cache and the feed catch up
            log.info("availability_refresh_skipped", events=len(updates))

    # Operations that share a transaction (`grouped`).

    async def grouped(self, event_id: int, operation: Operation[T]) -> T:
        """Run `operation` as `locked` would for one event, in a transaction it may share with the
        event's other grouped operations waiting in this instance: one lock, one transaction and
        one commit for them all under load, each still its own unit of work in a savepoint of its
        own. One that is refused, or fails on a value, is rolled back alone; a deadlock or a stale
        version runs them all again."""
        return await self._in_group(self._groups, event_id, operation)

    async def grouped_unlocked(self, event_id: int, operation: Operation[T]) -> T:
        """Run `operation` as `unlocked` would, in a transaction it may share with the other such
        operations on the event's rows waiting in this instance (as `grouped`, without the event's
        lock): one connection and one commit for them all under load. For changes that move no seats
        and lock only their own rows (booking a hold, starting a payment). Each holds its rows' locks
        until the group commits: a deadlock with another writer runs the group again."""
        return await self._in_group(self._unlocked_groups, event_id, operation)

    async def _in_group(
        self, groups: KeyedBatches[int, _Grouped[Any], Any], event_id: int, operation: Operation[T]
    ) -> T:
        try:
            result: T = await groups.submit(event_id, _Grouped(operation, current_request_id()))
        except RefuseAfterCommit as refused:
            # Answered here, not in the group: its deferred expiry waits for the event's lock in
            # this request's own time (and context: its request id), not the group's.
            return await self._outcome(refused)
        return result

    async def close(self) -> None:
        """Wait for the grouped transactions in flight (graceful shutdown)."""
        await asyncio.gather(self._groups.close(), self._unlocked_groups.close())

    async def _run_locked_group(self, event_id: int, group: list[_Grouped[Any]]) -> list[Any]:
        locked = frozenset([event_id])
        async with self._session_under_all_locks([event_id]) as session:
            done = await self._retrying(lambda: self._group_attempt(session, locked, group))
        return await self._group_outcomes(done)

    async def _run_unlocked_group(self, _event_id: int, group: list[_Grouped[Any]]) -> list[Any]:
        async with self._infrastructure.sessionmaker() as session:
            done = await self._retrying(lambda: self._group_attempt(session, frozenset(), group))
        return await self._group_outcomes(done)

    async def _group_outcomes(self, done: list[tuple[UnitOfWork, Any]]) -> list[Any]:
        """Announce what the committed units left; each operation's result, or its exception: what
        rolled its savepoint back, or a refusal after its commit, which its caller answers."""
        await self._announce([uow for uow, outcome in done if _committed(outcome)])
        return [outcome for _, outcome in done]

    async def _group_attempt(
        self, session: AsyncSession, locked_events: frozenset[int], group: list[_Grouped[Any]]
    ) -> list[tuple[UnitOfWork, Any]]:
        """The group in one transaction, each operation in a savepoint; the `locked_events`' rows
        are locked first (their Redis locks are held around it)."""
        done: list[tuple[UnitOfWork, Any]] = []
        async with session.begin():
            if locked_events:
                await _lock_rows(session, sorted(locked_events))
            for grouped in group:
                uow = UnitOfWork(session, self._settings, locked_events=locked_events, request_id=grouped.request_id)
                done.append((uow, await self._in_savepoint(session, uow, grouped.operation)))
        return done

    async def _in_savepoint(self, session: AsyncSession, uow: UnitOfWork, operation: Operation[T]) -> Any:
        """The operation's result (or its refusal after the commit), or the exception that rolled
        its savepoint back. A transient failure ends the whole group's transaction, to be run again;
        a lost connection ends it too, the transaction gone with it (a failover)."""
        savepoint = await session.begin_nested()
        try:
            try:
                result: T | RefuseAfterCommit = await operation(uow)
            except RefuseAfterCommit as refused:
                result = refused
            await uow.finish(refused=isinstance(result, RefuseAfterCommit))
        except Exception as exc:
            if is_transient(exc) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
                raise
            await savepoint.rollback()
            return exc
        await savepoint.commit()
        return result


def _committed(outcome: object) -> bool:
    """Whether a grouped operation's savepoint committed (`Transactions._in_savepoint`)."""
    return not isinstance(outcome, BaseException) or isinstance(outcome, RefuseAfterCommit)


@dataclass(frozen=True, slots=True)
class _Grouped(Generic[T]):
    operation: Operation[T]
    request_id: str | None  # the submitting request's: the group runs in a context of its own


# The events' rows, locked in event order. FOR NO KEY UPDATE: it excludes the other writers of the
# row all the same, but not the key-share lock a booking's INSERT takes on its event (its foreign
# key), so booking a hold, which takes no event lock, never waits on a writer that waits on it.
LOCK_ROWS = (
    select(EventAvailability.event_id)
    .where(any_of(EventAvailability.event_id, "event_ids"))
    .order_by(EventAvailability.event_id)
    .with_for_update(key_share=True)
)


async def _lock_rows(session: AsyncSession, event_ids: Sequence[int]) -> None:
    await session.execute(LOCK_ROWS, {"event_ids": list(event_ids)})


# PostgreSQL's deadlock_detected and serialization_failure: the transaction may simply be run again.
TRANSIENT_SQLSTATES = {"40P01", "40001"}


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, StaleVersion | StaleDataError):
        return True
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES
