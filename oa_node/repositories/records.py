"""Idempotency records and the outbox (the audit trail writes itself: :mod:`oa_node.audit`).

SQLAlchemy Core statements built once, at import, on the connection of the caller's session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, false, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from oa_node import models as m

_records = m.table_of(m.RequestRecord)
_outbox = m.table_of(m.OutboxMessage)

FIND_RECORD = select(_records.c.fingerprint, _records.c.response).where(
    _records.c.kind == bindparam("kind"),
    _records.c.requester == bindparam("requester"),
    _records.c.reference == bindparam("reference"),
)
ADD_RECORD = insert(_records)
ADD_MESSAGES = insert(_outbox)
PENDING = (
    select(_outbox.c.id, _outbox.c.message_id, _outbox.c.payload)
    .where(_outbox.c.delivered == false())
    .order_by(_outbox.c.id)
    .limit(bindparam("limit"))
)
BACKLOG = select(func.count()).select_from(_outbox).where(_outbox.c.delivered == false())
MARK_DELIVERED = (
    update(_outbox)
    .where(_outbox.c.message_id.in_(bindparam("ids", expanding=True)))
    .values(delivered=True, delivered_at=bindparam("now"))
)
COUNT_ATTEMPT = (
    update(_outbox)
    .where(_outbox.c.id.in_(bindparam("ids", expanding=True)))
    .values(attempts=_outbox.c.attempts + 1)
)


@dataclass(frozen=True)
class Record:
    fingerprint: str
    response: bytes


@dataclass(frozen=True)
class Pending:
    id: int
    message_id: str
    payload: bytes


class RequestRecordRepository:
    """The first answer of each idempotent request, by (kind, requester, reference)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find(self, kind: str, requester: str, reference: str) -> Record | None:
        conn = await self.session.connection()
        row = (
            await conn.execute(FIND_RECORD, {"kind": kind, "requester": requester, "reference": reference})
        ).first()
        return Record(row.fingerprint, row.response) if row is not None else None

    async def add(
        self, kind: str, requester: str, reference: str, fingerprint: str, response: bytes, now: dt.datetime
    ) -> None:
        conn = await self.session.connection()
        await conn.execute(
            ADD_RECORD,
            [
                {
                    "kind": kind,
                    "requester": requester,
                    "reference": reference,
                    "fingerprint": fingerprint,
                    "response": response,
                    "created_at": now,
                }
            ],
        )


class OutboxRepository:
    """Messages waiting for the relay."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Messages with ``message_id``, ``recipient_inami``, ``kind``, ``payload`` and ``created_at``."""
        if messages:
            conn = await self.session.connection()
            await conn.execute(ADD_MESSAGES, [{"delivered": False, "attempts": 0, **m} for m in messages])

    async def pending(self, limit: int) -> list[Pending]:
        conn = await self.session.connection()
        return [Pending(r.id, r.message_id, r.payload) for r in await conn.execute(PENDING, {"limit": limit})]

    async def backlog(self) -> int:
        """Messages not delivered yet (the outbox backlog gauge)."""
        conn = await self.session.connection()
        return int((await conn.execute(BACKLOG)).scalar_one())

    async def mark_delivered(self, message_ids: Sequence[str], now: dt.datetime) -> None:
        if message_ids:
            conn = await self.session.connection()
            await conn.execute(MARK_DELIVERED, {"ids": list(message_ids), "now": now})

    async def count_attempt(self, ids: Sequence[int]) -> None:
        if ids:
            conn = await self.session.connection()
            await conn.execute(COUNT_ATTEMPT, {"ids": list(ids)})


__all__ = ["OutboxRepository", "Pending", "Record", "RequestRecordRepository"]
