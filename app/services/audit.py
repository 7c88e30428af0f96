"""The audit trail (SPEC section 6): one row per change, written in the change's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.security import Principal
from app.db.base import table_of
from app.db.queries import paginate, where_equal, where_within
from app.models.audit import AuditLog

AUDIT_TABLE = table_of(AuditLog)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change: a user, an admin, the payment provider or the service itself."""

    type: str
    id: int | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(principal.role.value, principal.user_id)

    @classmethod
    def system(cls) -> Actor:
        return cls("system")

    @classmethod
    def payment_provider(cls) -> Actor:
        return cls("payment-provider")


def current_request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("request_id")
    return value if isinstance(value, str) else None


def audit_row(
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: int,
    now: datetime,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    request_id: str | None = None,
) -> dict[str, Any]:
    """`request_id` defaults to the current request's (from the logging context)."""
    return {
        "occurred_at": now,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "before": before,
        "after": after,
        "request_id": request_id if request_id is not None else current_request_id(),
    }


@dataclass(frozen=True, slots=True)
class AuditFilter:
    entity_type: str | None = None
    entity_id: int | None = None
    actor_type: str | None = None
    actor_id: int | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(query: Select[Any], flt: AuditFilter) -> Select[Any]:
    conditions = {
        AuditLog.entity_type: flt.entity_type,
        AuditLog.entity_id: flt.entity_id,
        AuditLog.actor_type: flt.actor_type,
        AuditLog.actor_id: flt.actor_id,
        AuditLog.action: flt.action,
    }
    return where_within(where_equal(query, conditions), AuditLog.occurred_at, flt.since, flt.until)


async def list_entries(session: AsyncSession, flt: AuditFilter, limit: int, offset: int) -> tuple[list[AuditLog], int]:
    return await paginate(session, _filtered(select(AuditLog), flt).order_by(AuditLog.id.desc()), limit, offset)


async def history(session: AsyncSession, entity_type: str, entity_id: int) -> list[AuditLog]:
    rows = await session.scalars(
        select(AuditLog)
        .where(AuditLog.entity_type == entity_type, AuditLog.entity_id == entity_id)
        .order_by(AuditLog.id)
    )
    return list(rows)
