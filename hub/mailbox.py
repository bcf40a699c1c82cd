"""The mailbox: durable in the hub DB, one row per message id, pending until confirmed by its recipient.

A :class:`MailboxNotifier` wakes the watch streams of a recipient in this process when a message arrives.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from hub.models import StoredMessage
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2


def content_hash(message: dmg_pb2.MailboxMessage) -> str:
    """SHA-256 (hex) of the serialized payload, as the contract defines it."""
    which = message.WhichOneof("payload")
    payload = getattr(message, which).SerializeToString(deterministic=True) if which else b""
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class StoreResult:
    stored: list[str]
    duplicates: list[str]
    recipients: set[str]


@dataclass(frozen=True)
class ConfirmResult:
    confirmed: int
    already: int
    unknown: list[str]


class MailboxRepository:
    """Mailbox rows in one session (the caller owns the transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def store(self, messages: Sequence[dmg_pb2.MailboxMessage], now: dt.datetime) -> StoreResult:
        """Store each message id once (stored at ``now``, the hub's clock); ids already stored are counted as
        duplicates."""
        ids = [m.message_id for m in messages]
        existing: dict[str, StoredMessage] = {}
        for start in range(0, len(ids), 500):
            rows = await self.session.execute(
                select(StoredMessage).where(col(StoredMessage.message_id).in_(ids[start : start + 500]))
            )
            existing.update({r.message_id: r for r in rows.scalars()})
        stored: list[str] = []
        duplicates: list[str] = []
        recipients: set[str] = set()
        for message in messages:
            row = existing.get(message.message_id)
            if row is not None:
                row.duplicate_count += 1
                duplicates.append(message.message_id)
                continue
            if not message.content_hash:
                message.content_hash = content_hash(message)
            row = StoredMessage(
                message_id=message.message_id,
                recipient_inami=message.recipient_inami,
                kind=int(message.kind),
                insurer_code=message.insurer_code,
                requester_reference=message.requester_reference,
                content_hash=message.content_hash,
                payload=message.SerializeToString(deterministic=True),
                stored_at=now,
            )
            self.session.add(row)
            existing[message.message_id] = row
            stored.append(message.message_id)
            recipients.add(message.recipient_inami)
        await self.session.flush()
        return StoreResult(stored, duplicates, recipients)

    async def pending(
        self, recipient: str, kinds: Iterable[int], *, after_id: int = 0, limit: int = 50
    ) -> list[tuple[int, dmg_pb2.MailboxMessage]]:
        """Unconfirmed messages of ``recipient`` with a row id above ``after_id``, oldest first."""
        query = select(StoredMessage.id, StoredMessage.payload).where(
            col(StoredMessage.recipient_inami) == recipient,
            col(StoredMessage.confirmed).is_(False),
            col(StoredMessage.id) > after_id,
        )
        wanted = [int(k) for k in kinds if k]
        if wanted:
            query = query.where(col(StoredMessage.kind).in_(wanted))
        rows = await self.session.execute(query.order_by(col(StoredMessage.id)).limit(limit))
        return [(int(row_id), dmg_pb2.MailboxMessage.FromString(payload)) for row_id, payload in rows.all()]

    async def count_pending(self) -> int:
        """Messages not confirmed yet, every recipient (the mailbox size gauge)."""
        query = select(func.count()).select_from(StoredMessage).where(col(StoredMessage.confirmed).is_(False))
        return int((await self.session.execute(query)).scalar_one())

    async def confirm(
        self, recipient: str, message_ids: Sequence[str], hashes: Sequence[str], now: dt.datetime
    ) -> ConfirmResult:
        """Confirm the recipient's messages by id or content hash; foreign or unknown ones are reported."""
        confirmed = already = 0
        unknown: list[str] = []
        seen: set[int] = set()
        for key, column in [(i, StoredMessage.message_id) for i in message_ids] + [
            (h, StoredMessage.content_hash) for h in hashes
        ]:
            rows = (
                (
                    await self.session.execute(
                        select(StoredMessage).where(
                            col(column) == key, col(StoredMessage.recipient_inami) == recipient
                        )
                    )
                )
                .scalars()
                .all()
            )
            if not rows:
                unknown.append(key)
                continue
            for row in rows:
                assert row.id is not None
                if row.id in seen:
                    continue
                seen.add(row.id)
                if row.confirmed:
                    already += 1
                else:
                    row.confirmed = True
                    row.confirmed_at = now
                    confirmed += 1
        await self.session.flush()
        return ConfirmResult(confirmed, already, unknown)


class MailboxNotifier:
    """In-process wake-ups for watch streams: per recipient when a message arrives, per session when it is
    revoked (the watch then ends at once instead of at its next look)."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._sessions: dict[str, set[asyncio.Event]] = defaultdict(set)

    def subscribe(self, recipient: str, session_id: str = "") -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[recipient].add(event)
        if session_id:
            self._sessions[session_id].add(event)
        return event

    def unsubscribe(self, recipient: str, event: asyncio.Event, session_id: str = "") -> None:
        for key, table in ((recipient, self._waiters), (session_id, self._sessions)):
            waiters = table.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del table[key]

    def notify(self, recipients: Iterable[str]) -> None:
        for recipient in recipients:
            for event in self._waiters.get(recipient, ()):
                event.set()

    def revoked(self, session_id: str) -> None:
        for event in self._sessions.get(session_id, ()):
            event.set()
