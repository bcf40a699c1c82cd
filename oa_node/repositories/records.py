"""Idempotency records and the outbox (the audit trail writes itself: :mod:`oa_node.audit`).

SQLAlchemy Core statements built once, at import, on the connection of the caller's session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, false, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
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
_WAITING = (_outbox.c.delivered == false(), _outbox.c.dead_at.is_(None))
# The next messages to deliver with their sizes (payloads are read once the batch is chosen: a few big
# messages must not be loaded a hundred at a time).
PENDING_SIZES = (
    select(_outbox.c.id, func.length(_outbox.c.payload).label("size"))
    .where(*_WAITING)
    .order_by(_outbox.c.id)
    .limit(bindparam("limit"))
)
PAYLOADS = (
    select(_outbox.c.id, _outbox.c.message_id, _outbox.c.payload)
    .where(_outbox.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_outbox.c.id)
)
BACKLOG = select(func.count()).select_from(_outbox).where(*_WAITING)
ATTEMPTS = select(_outbox.c.attempts).where(_outbox.c.id == bindparam("row_id"))
DEAD_COUNT = select(func.count()).select_from(_outbox).where(_outbox.c.dead_at.is_not(None))
DEAD = (
    select(
        _outbox.c.id,
        _outbox.c.message_id,
        _outbox.c.recipient_inami,
        _outbox.c.kind,
        func.length(_outbox.c.payload).label("size"),
        _outbox.c.created_at,
        _outbox.c.dead_at,
        _outbox.c.attempts,
        _outbox.c.error,
    )
    .where(_outbox.c.dead_at.is_not(None))
    .order_by(_outbox.c.id)
    .limit(bindparam("limit"))
)
SET_ASIDE = (
    update(_outbox)
    .where(_outbox.c.id == bindparam("row_id"), _outbox.c.delivered == false())
    .values(dead_at=bindparam("now"), error=bindparam("why"), attempts=_outbox.c.attempts + 1)
)
REQUEUE = (
    update(_outbox)
    .where(_outbox.c.id.in_(bindparam("ids", expanding=True)), _outbox.c.dead_at.is_not(None))
    .values(dead_at=None, error="", attempts=0)
)
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


MAX_ERROR = 500  # characters of a dead letter's error kept (oa_outbox.error)


@dataclass(frozen=True)
class Pending:
    id: int
    message_id: str
    payload: bytes


@dataclass(frozen=True)
class Oversized:
    """A waiting message too big to be delivered (only its size was read)."""

    id: int
    size: int


@dataclass(frozen=True)
class DeadLetter:
    id: int
    message_id: str
    recipient_inami: str
    kind: int
    size: int
    created_at: dt.datetime
    dead_at: dt.datetime
    attempts: int
    error: str


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


def outbox_row(message: dmg_pb2.MailboxMessage, now: dt.datetime) -> dict[str, Any]:
    """The outbox row of a mailbox message (what :meth:`OutboxRepository.add` takes)."""
    return {
        "message_id": message.message_id,
        "recipient_inami": message.recipient_inami,
        "kind": int(message.kind),
        "payload": message.SerializeToString(),
        "created_at": now,
    }


class OutboxRepository:
    """Messages waiting for the relay."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Messages with ``message_id``, ``recipient_inami``, ``kind``, ``payload`` and ``created_at``."""
        if messages:
            conn = await self.session.connection()
            await conn.execute(ADD_MESSAGES, [{"delivered": False, "attempts": 0, **m} for m in messages])

    async def pending(
        self, limit: int, max_bytes: int | None = None, max_message: int | None = None
    ) -> list[Pending | Oversized]:
        """The next messages to deliver, oldest first: at most ``limit``, and at most ``max_bytes`` of
        payload together. A message bigger than ``max_message`` ends the batch; when it is the first, it
        comes alone, as :class:`Oversized` (its payload is not read)."""
        conn = await self.session.connection()
        chosen: list[int] = []
        total = 0
        for row in await conn.execute(PENDING_SIZES, {"limit": limit}):
            size = int(row.size or 0)
            if max_message is not None and size > max_message:
                if chosen:
                    break
                return [Oversized(row.id, size)]
            if max_bytes is not None and chosen and total + size > max_bytes:
                break
            chosen.append(row.id)
            total += size
        if not chosen:
            return []
        rows = await conn.execute(PAYLOADS, {"ids": chosen})
        return [Pending(r.id, r.message_id, r.payload) for r in rows]

    async def backlog(self) -> int:
        """Messages not delivered yet, set-aside ones excepted (the outbox backlog gauge)."""
        conn = await self.session.connection()
        return int((await conn.execute(BACKLOG)).scalar_one())

    async def attempts(self, row_id: int) -> int:
        """How many deliveries of one message failed."""
        conn = await self.session.connection()
        return int((await conn.execute(ATTEMPTS, {"row_id": row_id})).scalar_one_or_none() or 0)

    async def set_aside(self, row_id: int, why: str, now: dt.datetime) -> None:
        """Make one message a dead letter: no longer sent, kept with its error for the operator."""
        conn = await self.session.connection()
        await conn.execute(SET_ASIDE, {"row_id": row_id, "why": why[:MAX_ERROR], "now": now})

    async def dead_count(self) -> int:
        conn = await self.session.connection()
        return int((await conn.execute(DEAD_COUNT)).scalar_one())

    async def dead(self, limit: int = 100) -> list[DeadLetter]:
        """The set-aside messages, oldest first."""
        conn = await self.session.connection()
        return [
            DeadLetter(
                r.id,
                r.message_id,
                r.recipient_inami,
                r.kind,
                int(r.size or 0),
                r.created_at,
                r.dead_at,
                r.attempts,
                r.error,
            )
            for r in await conn.execute(DEAD, {"limit": limit})
        ]

    async def requeue(self, ids: Sequence[int]) -> int:
        """Put set-aside messages back in the queue (after the cause was fixed); how many were."""
        if not ids:
            return 0
        conn = await self.session.connection()
        return int((await conn.execute(REQUEUE, {"ids": list(ids)})).rowcount or 0)

    async def mark_delivered(self, message_ids: Sequence[str], now: dt.datetime) -> None:
        if message_ids:
            conn = await self.session.connection()
            await conn.execute(MARK_DELIVERED, {"ids": list(message_ids), "now": now})

    async def count_attempt(self, ids: Sequence[int]) -> None:
        if ids:
            conn = await self.session.connection()
            await conn.execute(COUNT_ATTEMPT, {"ids": list(ids)})


__all__ = ["DeadLetter", "OutboxRepository", "Oversized", "Pending", "Record", "RequestRecordRepository"]
