"""The background sweeper, in every instance: expiry of whatever has lapsed, completion of past
events' bookings (app/services/expiry.py), and old idempotency keys forgotten."""

from __future__ import annotations

import asyncio

from app.core.clock import clock
from app.core.errors import AppError
from app.core.logging import get_logger
from app.runtime import Runtime
from app.services import idempotency
from app.services.expiry import events_with_due_work, expire_due_for_event

log = get_logger(__name__)


async def sweep_once(runtime: Runtime) -> int:
    now = clock.now()
    async with runtime.sessionmaker() as session:
        event_ids = await events_with_due_work(session, now, runtime.settings.sweep_batch_size)
    done = 0
    for event_id in event_ids:
        done += await expire_due_for_event(runtime.transactions, event_id)
    async with runtime.sessionmaker() as session, session.begin():
        await idempotency.purge_expired(session, now)
    return done


async def run_sweeper(runtime: Runtime) -> None:
    """The background loop; errors are logged and the next pass tries again."""
    while True:
        try:
            await sweep_once(runtime)
        except asyncio.CancelledError:
            raise
        except AppError as exc:  # an event busy, a conflict: the next pass tries again
            log.warning("sweeper_pass_incomplete", code=exc.code)
        except Exception:
            log.exception("sweeper_pass_failed")
        await asyncio.sleep(runtime.settings.sweep_interval_seconds)
