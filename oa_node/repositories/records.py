"""Idempotency records and the outbox (the audit trail writes itself: :mod:`oa_node.audit`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from oa_node import models as m


class RequestRecordRepository:
    """The first answer of each idempotent request, by (kind, requester, reference)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find(self, kind: str, requester: str, reference: str) -> m.RequestRecord | None:
        stmt = select(m.RequestRecord).where(
            m.RequestRecord.kind == kind,
            m.RequestRecord.requester == requester,
            m.RequestRecord.reference == reference,
        )
        return (await self.session.execute(stmt)).scalars().first()

    async def add(
        self, kind: str, requester: str, reference: str, fingerprint: str, response: bytes, now: dt.datetime
    ) -> None:
        self.session.add(
            m.RequestRecord(
                kind=kind,
                requester=requester,
                reference=reference,
                fingerprint=fingerprint,
                response=response,
                created_at=now,
            )
        )
        await self.session.flush()


class OutboxRepository:
    """Messages waiting for the relay."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, messages: Sequence[m.OutboxMessage]) -> None:
        self.session.add_all(messages)
        await self.session.flush()

    async def pending(self, limit: int) -> list[m.OutboxMessage]:
        stmt = (
            select(m.OutboxMessage)
            .where(m.OutboxMessage.delivered == False)  # noqa: E712
            .order_by(col(m.OutboxMessage.id))
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def backlog(self) -> int:
        """Messages not delivered yet (the outbox backlog gauge)."""
        stmt = select(func.count()).select_from(m.OutboxMessage).where(m.OutboxMessage.delivered == False)  # noqa: E712
        return int((await self.session.execute(stmt)).scalar_one())

    async def mark_delivered(self, message_ids: Sequence[str], now: dt.datetime) -> None:
        if message_ids:
            await self.session.execute(
                update(m.OutboxMessage)
                .where(col(m.OutboxMessage.message_id).in_(message_ids))
                .values(delivered=True, delivered_at=now)
            )

    async def count_attempt(self, ids: Sequence[int]) -> None:
        if ids:
            await self.session.execute(
                update(m.OutboxMessage)
                .where(col(m.OutboxMessage.id).in_(ids))
                .values(attempts=m.OutboxMessage.attempts + 1)
            )
