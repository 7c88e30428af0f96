"""Safe retries of POSTs carrying an `Idempotency-Key` (SPEC section 4).

A key is claimed in its own short transaction. The operation then stores its answer in the same
transaction as the change it makes (its unit of work's `answer`), so a key can never point at a change that did
not commit, nor a committed change lack its answer. A claim left unanswered for longer than
`ABANDONED_AFTER` belonged to a request that died before committing, and may be taken over.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.errors import IdempotencyInProgressError, IdempotencyMismatchError
from app.db.base import table_of
from app.models.idempotency import IdempotencyKey

ABANDONED_AFTER = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Claim:
    record_id: int


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    body: Any


# Nesting is at most the number of brackets: a body with fewer parses and prints far inside
# Python's recursion limit, whatever the call stack above it.
MAX_CANONICAL_BRACKETS = 256


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """The same JSON in any layout (key order, spacing) has one fingerprint; any other body is
    taken byte for byte, so a body too deep to parse safely can neither raise nor collide."""
    canonical = _canonical_json(body)
    payload = body if canonical is None else canonical.encode()
    return hashlib.sha256(f"{method} {path}\n".encode() + payload).hexdigest()


def _canonical_json(body: bytes) -> str | None:
    if body.count(b"[") + body.count(b"{") > MAX_CANONICAL_BRACKETS:
        return None
    try:
        return json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":"))
    except ValueError:  # not JSON (nor UTF-8), or a number too long to read
        return None


async def claim(
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: int,
    key: str,
    fingerprint: str,
    now: datetime,
    ttl: timedelta,
) -> Claim | Replay:
    """Claim the key for this request, or return the first request's answer."""
    async with sessionmaker() as session, session.begin():
        inserted = await session.scalar(
            insert(IdempotencyKey)
            .values(
                user_id=user_id,
                key=key,
                request_hash=fingerprint,
                created_at=now,
                expires_at=now + ttl,
            )
            .on_conflict_do_nothing(constraint="uq_idempotency_keys_user_id_key")
            .returning(IdempotencyKey.id)
        )
        if inserted is not None:
            return Claim(inserted)
        existing = await session.scalar(
            select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key).with_for_update()
        )
        if existing is None:  # expired and purged between the two statements
            raise IdempotencyInProgressError()
        if existing.expires_at <= now:
            _reset(existing, fingerprint, now, ttl)
            return Claim(existing.id)
        if existing.request_hash != fingerprint:
            raise IdempotencyMismatchError("This Idempotency-Key was already used with a different request")
        if existing.status_code is not None:
            return Replay(existing.status_code, existing.response_body)
        if now - existing.created_at > ABANDONED_AFTER:
            _reset(existing, fingerprint, now, ttl)
            return Claim(existing.id)
        raise IdempotencyInProgressError()


def _reset(record: IdempotencyKey, fingerprint: str, now: datetime, ttl: timedelta) -> None:
    record.request_hash = fingerprint
    record.status_code = None
    record.response_body = None
    record.created_at = now
    record.expires_at = now + ttl


# A claim's answer (Core, not the ORM: several in one statement); its parameters are made by `answer_of`.
IDEMPOTENCY_KEYS = table_of(IdempotencyKey)
STORE_ANSWER = (
    update(IDEMPOTENCY_KEYS)
    .where(IDEMPOTENCY_KEYS.c.id == bindparam("claimed"))
    .values(status_code=bindparam("answer_status"), response_body=bindparam("answer_body"))
)


def answer_of(claimed: Claim, status_code: int, body: Any) -> dict[str, Any]:
    return {"claimed": claimed.record_id, "answer_status": status_code, "answer_body": body}


async def store(sessionmaker: async_sessionmaker[AsyncSession], claimed: Claim, status_code: int, body: Any) -> None:
    """Record an answer given without a change (a refusal): a change's answer is committed with
    it, by its unit of work (app/services/unit_of_work.py)."""
    async with sessionmaker() as session, session.begin():
        await session.execute(STORE_ANSWER, [answer_of(claimed, status_code, body)])


async def release(sessionmaker: async_sessionmaker[AsyncSession], claimed: Claim) -> None:
    """Forget a claim whose request failed without an answer worth repeating (5xx)."""
    async with sessionmaker() as session, session.begin():
        await session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.id == claimed.record_id, IdempotencyKey.status_code.is_(None))
        )


async def purge_expired(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)
