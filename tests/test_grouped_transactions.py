"""Holds and payment confirmations of one event that wait together share a transaction
(`Transactions.grouped`), and so do bookings of holds and payment starts, without the event's lock
(`Transactions.grouped_unlocked`): each is still its own unit of work, refused or rolled back
alone, with its own audit rows and request id."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.config import Settings
from app.core.errors import ConflictError
from app.services.audit import Actor
from app.services.seats import shift_seats
from app.services.unit_of_work import Operation, UnitOfWork
from tests.checks import assert_invariant, count
from tests.conftest import Api
from tests.support import pay, webhook


async def test_simultaneous_holds_take_exactly_the_seats_there_are(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=25)

    async def hold(n: int) -> tuple[int, str]:
        headers = api.headers(100 + n, **{"X-Request-ID": f"hold-{n:02d}"})
        response = await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 1}, headers=headers)
        return response.status_code, response.json().get("code") or str(response.json()["id"])

    answers = await asyncio.gather(*(hold(n) for n in range(40)))
    assert sorted(status for status, _ in answers) == [201] * 25 + [409] * 15
    assert {code for status, code in answers if status == 409} == {"insufficient_capacity"}
    assert await count(db, "reservations", "status = 'active'") == 25
    await db.rollback()
    created = "SELECT entity_id, request_id FROM audit_log WHERE action = 'reservation.created'"
    audited = dict((await db.execute(text(created))).all())
    held = {int(hold_id): f"hold-{n:02d}" for n, (status, hold_id) in enumerate(answers) if status == 201}
    assert audited == held  # each hold audited once, with its own request's id
    await assert_invariant(db)


async def test_simultaneous_confirmations_all_apply(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=30)
    bookings = [(await api.book(100 + n, 1)).json() for n in range(20)]
    intents = [await pay(api, 100 + n, booking["id"]) for n, booking in enumerate(bookings)]
    answers = await asyncio.gather(*(webhook(api, intent) for intent in intents))
    assert [answer.status_code for answer in answers] == [200] * 20
    assert await count(db, "bookings", "status = 'confirmed' AND payment_status = 'completed'") == 20
    assert await count(db, "audit_log", "action = 'booking.confirmed'") == 20
    assert await count(db, "outbox", "kind = 'confirmed'") == 20
    assert (await api.availability(1))["confirmed_capacity"] == 20
    await assert_invariant(db)


async def test_simultaneous_bookings_of_holds_are_answered_each(
    api: Api, db: AsyncConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.create_event(1, capacity=30)
    holds = [await hold_of(api, 100 + n) for n in range(20)]
    grouped = grouped_calls(api, monkeypatch)

    async def book_hold(n: int) -> tuple[int, str]:
        body = {"event_id": 1, "quantity": 2 if n == 7 else 1, "reservation_id": holds[n]}  # 7: not its hold's
        headers = api.headers(100 + n, **{"X-Request-ID": f"book-{n:02d}", "Idempotency-Key": f"key-{n:02d}"})
        response = await api.client.post("/api/v1/bookings/", json=body, headers=headers)
        return response.status_code, response.json().get("code") or str(response.json()["id"])

    answers = await asyncio.gather(*(book_hold(n) for n in range(20)))
    assert grouped == [1] * 20  # each through the event's unlocked groups
    assert await asyncio.gather(*(book_hold(n) for n in (3, 7, 12))) == [answers[3], answers[7], answers[12]]
    assert [status for status, _ in answers] == [400 if n == 7 else 201 for n in range(20)]
    assert await count(db, "bookings") == 19
    assert await count(db, "reservations", "status = 'converted'") == 19
    created = "SELECT entity_id, request_id FROM audit_log WHERE action = 'booking.created'"
    audited = dict((await db.execute(text(created))).all())
    assert audited == {
        int(booking_id): f"book-{n:02d}" for n, (status, booking_id) in enumerate(answers) if status == 201
    }
    await assert_invariant(db)


async def test_simultaneous_payment_starts_are_answered_each(
    api: Api, db: AsyncConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.create_event(1, capacity=30)
    bookings = [(await api.book(100 + n, 1)).json() for n in range(20)]
    grouped = grouped_calls(api, monkeypatch)
    intents = await asyncio.gather(*(pay(api, 100 + n, booking["id"]) for n, booking in enumerate(bookings)))
    assert grouped == [1] * 20
    assert len({intent["payment_reference"] for intent in intents}) == 20
    assert await count(db, "bookings", "payment_status = 'processing'") == 20
    assert await count(db, "audit_log", "action = 'payment.started'") == 20


def grouped_calls(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The events of the operations run through `Transactions.grouped_unlocked` from now on."""
    transactions = api.runtime.transactions
    calls: list[int] = []
    run = transactions.grouped_unlocked

    async def recorded(event_id: int, operation: Operation[Any]) -> Any:
        calls.append(event_id)
        return await run(event_id, operation)

    monkeypatch.setattr(transactions, "grouped_unlocked", recorded)
    return calls


async def hold_of(api: Api, user: int) -> int:
    response = await api.client.post("/api/v1/availability/1/reserve", json={"quantity": 1}, headers=api.headers(user))
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@pytest.mark.parametrize("locked", [True, False])
async def test_one_refused_in_a_group_is_rolled_back_alone(api: Api, db: AsyncConnection, locked: bool) -> None:
    await api.create_event(1, capacity=5)
    transactions = api.runtime.transactions
    grouped = transactions.grouped if locked else transactions.grouped_unlocked

    def operation(n: int, refuse: bool) -> object:
        async def audited_then_maybe_refused(uow: UnitOfWork) -> int:
            uow.audit(Actor.system(), f"test.grouped.{n}", "event_availability", 1)
            await uow.write()  # written in its savepoint before it is refused
            if refuse:
                raise ConflictError("refused on purpose")
            txid: int = await uow.session.scalar(text("SELECT txid_current()"))
            return txid

        return audited_then_maybe_refused

    outcomes = await asyncio.gather(
        *(grouped(1, operation(n, refuse=n == 2)) for n in range(5)), return_exceptions=True
    )
    assert isinstance(outcomes[2], ConflictError)
    txids = {outcome for n, outcome in enumerate(outcomes) if n != 2}
    assert len(txids) <= 2  # the first ran alone; everything that waited behind it shared one transaction
    assert await count(db, "audit_log", "action LIKE 'test.grouped.%'") == 4
    assert await count(db, "audit_log", "action = 'test.grouped.2'") == 0


async def test_a_group_announces_the_figures_its_committed_operations_left(api: Api, db: AsyncConnection) -> None:
    await api.create_event(1, capacity=5)
    transactions = api.runtime.transactions

    def operation(refuse: bool) -> object:
        async def moved_then_maybe_refused(uow: UnitOfWork) -> None:
            await shift_seats(uow, 1, available=-1, reserved=1)
            if refuse:  # rolled back after moving seats: the event's row in the session is expired
                raise ConflictError("refused on purpose")

        return moved_then_maybe_refused

    outcomes = await asyncio.gather(
        *(transactions.grouped(1, operation(refuse=n == 3)) for n in range(4)), return_exceptions=True
    )
    assert [isinstance(outcome, ConflictError) for outcome in outcomes] == [False, False, False, True]
    await db.rollback()
    available = (await db.execute(text("SELECT available_capacity FROM event_availability"))).scalar_one()
    assert available == 2
    cached = orjson.loads(await api.runtime.redis.client.get(api.runtime.redis.key("availability", 1)))
    assert (cached["available_capacity"], cached["reserved_capacity"]) == (2, 3)


async def test_seats_never_move_without_their_events_lock(settings: Settings) -> None:
    unlocked = UnitOfWork(cast(AsyncSession, None), settings, locked_events=frozenset({2}))
    with pytest.raises(RuntimeError, match="without its lock"):
        await shift_seats(unlocked, 1, available=-1, reserved=1)


async def test_a_connection_lost_in_a_group_fails_the_group_as_unavailable(api: Api, db: AsyncConnection) -> None:
    """The database connection is cut inside one grouped operation (as in a failover): the group's
    transaction is gone, so every operation of it gets the connection's error (503 at the API),
    not a later one from committing on a dead connection."""
    await api.create_event(1, capacity=5)
    transactions = api.runtime.transactions

    async def cut(uow: UnitOfWork) -> None:
        await uow.session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    async def harmless(uow: UnitOfWork) -> None:
        return None

    outcomes = await asyncio.gather(
        transactions.grouped(1, harmless),
        transactions.grouped(1, cut),
        transactions.grouped(1, harmless),
        return_exceptions=True,
    )
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert failures, outcomes
    assert all(isinstance(failure, DBAPIError) and failure.connection_invalidated for failure in failures), failures
    await assert_invariant(db)
