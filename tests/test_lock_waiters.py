"""Writers waiting for an event's turn in an instance hold no database connection: a crowd of
them queued behind one slow writer leaves the pool to everyone else."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from app.core.config import Settings
from app.services.unit_of_work import UnitOfWork
from tests.conftest import make_settings, running_app


async def test_waiting_writers_leave_the_pool_to_others(database_url: str, redis_url: str) -> None:
    settings: Settings = make_settings(
        database_url, redis_url, db_pool_size=2, db_max_overflow=0, db_pool_timeout_seconds=0.5
    )
    async with running_app(settings) as api:
        await api.create_event(1, capacity=5)
        transactions = api.runtime.transactions
        first_holds = asyncio.Event()

        async def slow(uow: UnitOfWork) -> None:
            first_holds.set()
            await asyncio.sleep(1.0)

        async def quick(uow: UnitOfWork) -> None:
            return None

        writers = [asyncio.create_task(transactions.locked(1, slow))]
        await first_holds.wait()
        writers += [asyncio.create_task(transactions.locked(1, quick)) for _ in range(8)]
        await asyncio.sleep(0.1)  # all queued behind the slow one

        async def read(session: object) -> int:
            return int((await session.execute(text("SELECT 1"))).scalar_one())  # type: ignore[attr-defined]

        assert await transactions.read(read) == 1  # a connection was free, well within the pool's 0.5 s
        await asyncio.gather(*writers)
