"""A state machine over one status field of an entity: its declared transitions, and applying them.

Each transition is named by its trigger ("cancel", "expire", ...) and its source status, and
declares its target, the seats it moves (per seat of the entity's quantity), its audit action and
its message. A trigger with no transition from the entity's status is refused with the trigger's
own error. Applying a transition is the whole change: status and other fields, the seat move, the
audit row and the message, all through the unit of work. The tables are in
app/services/lifecycles.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from app.core.errors import AppError
from app.models.lapsing import Lapsing
from app.services.audit import Actor
from app.services.seats import shift_seats
from app.services.unit_of_work import UnitOfWork

E = TypeVar("E", bound=Lapsing)  # every entity with a state machine holds seats for a while
S = TypeVar("S", bound=StrEnum)


@dataclass(frozen=True, slots=True)
class SeatMove:
    """Seats moved between an event's counters, per seat of the entity's quantity."""

    available: int = 0
    reserved: int = 0
    confirmed: int = 0

    def frees(self) -> bool:
        return self.available > 0

    def of(self, quantity: int) -> dict[str, int]:
        return {
            "available": self.available * quantity,
            "reserved": self.reserved * quantity,
            "confirmed": self.confirmed * quantity,
        }


STAY = SeatMove()
HOLD = SeatMove(available=-1, reserved=1)  # open seats held for the entity
RETURN_HELD = SeatMove(available=1, reserved=-1)  # held seats open again
SELL_HELD = SeatMove(reserved=-1, confirmed=1)
RETURN_SOLD = SeatMove(available=1, confirmed=-1)
SELL_OPEN = SeatMove(available=-1, confirmed=1)


@dataclass(frozen=True, slots=True)
class Transition(Generic[S]):
    trigger: str
    source: S | None  # None: the entity is created by it
    target: S
    action: str | None  # its audit action; None when another transition's row records it
    message: str | None = None
    seats: SeatMove = STAY


class StateMachine(Generic[E, S]):
    def __init__(
        self,
        entity_type: str,
        field: str,
        transitions: Iterable[Transition[S]],
        refusals: Mapping[str, type[AppError]],
        describe: Callable[[E], dict[str, Any]],
        announce: Callable[[str, E, dict[str, Any], UnitOfWork], dict[str, Any]],
        *,
        noun: str | None = None,
        announces_figures: bool = False,
    ) -> None:
        self.entity_type = entity_type
        self.noun = noun or entity_type.replace("_", " ")
        # Its messages carry the event's figures: announced once what follows the change is done.
        self.announces_figures = announces_figures
        self.field = field
        self.transitions = {(t.trigger, t.source): t for t in transitions}
        self.refusals = dict(refusals)
        self.describe = describe
        self._announce = announce

    def find(self, trigger: str, source: S | None) -> Transition[S] | None:
        return self.transitions.get((trigger, source))

    def transition(self, trigger: str, source: S | None) -> Transition[S]:
        """The transition `trigger` makes from `source`; refused with the trigger's error if none."""
        rule = self.find(trigger, source)
        if rule is None:
            targets = [t.target for (name, _), t in self.transitions.items() if name == trigger]
            if not targets:
                raise ValueError(f"{self.noun}: no trigger {trigger!r}")
            target = targets[0]
            state = source.value if source is not None else "new"
            raise self.refusal(trigger, f"A {state} {self.noun} cannot become {target.value}")
        return rule

    def refusal(self, trigger: str, detail: str) -> AppError:
        return self.refusals[trigger](detail)

    def status_of(self, entity: E) -> S:
        status: S = getattr(entity, self.field)
        return status

    def create(self, uow: UnitOfWork, entity: E, trigger: str) -> Transition[S]:
        """Give a new entity the status its creating transition leads to. Its declared seats are
        taken by app/services/seats.py's `take_seats` (version-checked), before it exists."""
        rule = self.transition(trigger, None)
        setattr(entity, self.field, rule.target)
        entity.updated_at = uow.now
        uow.session.add(entity)
        return rule

    async def apply(
        self,
        uow: UnitOfWork,
        entity: E,
        trigger: str,
        actor: Actor,
        *,
        along: Sequence[tuple[StateMachine[E, Any], str]] = (),
        move_seats: bool = True,
        announce: bool = True,
        **changes: Any,
    ) -> Transition[S]:
        """Make `trigger`'s transition of a locked entity, and its companions' (`along`: other
        state fields of the same row moving with it), with every effect. A caller that moves the
        seats of several entities at once, or announces later, says so (`move_seats`, `announce`)."""
        rule = self.transition(trigger, self.status_of(entity))
        companions = [(machine, machine.transition(t, machine.status_of(entity))) for machine, t in along]
        before = self.describe(entity)
        setattr(entity, self.field, rule.target)
        for machine, companion in companions:
            setattr(entity, machine.field, companion.target)
        for name, value in changes.items():
            setattr(entity, name, value)
        entity.updated_at = uow.now
        await uow.session.flush()
        if move_seats and rule.seats != STAY:
            await shift_seats(uow, entity.event_id, **rule.seats.of(entity.quantity))
        after = self.describe(entity)
        self.record(uow, rule, entity, actor, before, after, announce=announce)
        for machine, companion in companions:
            machine.record(uow, companion, entity, actor, before, after)
        return rule

    def record(
        self,
        uow: UnitOfWork,
        rule: Transition[S],
        entity: E,
        actor: Actor,
        before: dict[str, Any] | None,
        after: dict[str, Any],
        *,
        request_id: str | None = None,
        announce: bool = True,
    ) -> None:
        """The transition's audit row and message, as it declares them."""
        if rule.action is not None:
            uow.audit(actor, rule.action, self.entity_type, entity.id, before, after, request_id=request_id)
        if announce:
            self.announce(uow, rule, entity, after)

    def announce(
        self, uow: UnitOfWork, rule: Transition[S], entity: E, described: dict[str, Any] | None = None
    ) -> None:
        """The transition's message, from the entity as described after it (described again if not given)."""
        if rule.message is not None:
            uow.publish(self._announce(rule.message, entity, described or self.describe(entity), uow))
