"""Status changes made through the state machines, with what follows them in every domain.

Seats that come free are offered to the event's waitlist in the same transaction. A lapsed row
that a request meets is handled one way everywhere: its expiry is committed, then the request is
refused with its own entity's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from app.core.errors import AppError
from app.models.lapsing import Lapsing
from app.services.audit import Actor
from app.services.state_machine import StateMachine, Transition
from app.services.unit_of_work import RefuseAfterCommit, UnitOfWork
from app.services.waitlist_offers import offer_freed_seats

E = TypeVar("E", bound=Lapsing)
SYSTEM = Actor.system()


async def move(
    uow: UnitOfWork,
    machine: StateMachine[E, Any],
    entity: E,
    trigger: str,
    actor: Actor,
    *,
    along: Sequence[tuple[StateMachine[E, Any], str]] = (),
    **changes: Any,
) -> Transition[Any]:
    """Make the transition; seats it frees are offered to the waitlist at once (a message of the
    event's figures follows the offers, so that it carries the figures they leave)."""
    later = machine.announces_figures
    rule = await machine.apply(uow, entity, trigger, actor, along=along, announce=not later, **changes)
    if rule.seats.frees():
        await offer_freed_seats(uow, entity.event_id)
    if later:
        machine.announce(uow, rule, entity)
    return rule


async def expire(uow: UnitOfWork, machine: StateMachine[E, Any], entity: E) -> None:
    await move(uow, machine, entity, "expire", SYSTEM)


async def refuse_if_lapsed(uow: UnitOfWork, machine: StateMachine[E, Any], entity: E, refusal: AppError) -> None:
    """A lapsed row is expired, that expiry committed, and the request refused with `refusal`.
    Without the event's lock (seats move), the expiry runs under it after this unit."""
    if not entity.lapsed:
        return
    if entity.event_id in uow.locked_events:
        await expire(uow, machine, entity)
        raise RefuseAfterCommit(refusal)
    model, entity_id = type(entity), entity.id

    async def expire_if_still_lapsed(locked: UnitOfWork) -> None:
        row = await locked.session.get(model, entity_id, with_for_update=True, populate_existing=True)
        if row is not None and row.lapsed:
            await expire(locked, machine, row)

    raise RefuseAfterCommit(refusal, then_locked=(entity.event_id, expire_if_still_lapsed))
