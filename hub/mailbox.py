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

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from hub.models import StoredMessage
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2


def content_hash(message: dmg_pb2.MailboxMessage) -> str:
    """SHA-256 (hex) of the serialized payload, as the contract defines it."""
    which = message.WhichOneof("payload")
    payload = getattr(message, which).SerializeToString(deterministic=True) if which else b""
    return hashlib.sha256(payload).hexdigest()


CHUNK = 500  # keys per IN (...) list


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
        """Store each (insurer, message id) once (stored at ``now``, the hub's clock); ones already stored
        are counted as duplicates. An insurer's message ids are its own: another insurer's message with the
        same id is another message."""
        existing: dict[tuple[str, str], StoredMessage] = {}
        for insurer in {m.insurer_code for m in messages}:
            ids = [m.message_id for m in messages if m.insurer_code == insurer]
            for start in range(0, len(ids), CHUNK):
                rows = await self.session.execute(
                    select(StoredMessage).where(
                        col(StoredMessage.insurer_code) == insurer,
                        col(StoredMessage.message_id).in_(ids[start : start + CHUNK]),
                    )
                )
                existing.update({(r.insurer_code, r.message_id): r for r in rows.scalars()})
        stored: list[str] = []
        duplicates: list[str] = []
        recipients: set[str] = set()
        for message in messages:
            key = (message.insurer_code, message.message_id)
            row = existing.get(key)
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
            existing[key] = row
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
        """Confirm the recipient's messages by id or content hash; foreign or unknown ones are reported.

        A message matched by both an id and a hash counts once; an id two insurers both used names both
        messages. The counts stay right when confirms of one message race: the rows are marked by one
        conditional UPDATE (``confirmed`` still false), so each message is counted confirmed by the one
        confirm that changed it and already confirmed by every other. The ids and hashes are looked up by
        the 500 (``IN``), not one query each (at most ``hub.requests.MAX_CONFIRM`` ids per call)."""
        found: dict[int, tuple[str, str]] = {}  # row id -> (message id, content hash)
        for column, keys in ((StoredMessage.message_id, message_ids), (StoredMessage.content_hash, hashes)):
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), CHUNK):
                rows = await self.session.execute(
                    select(StoredMessage.id, StoredMessage.message_id, StoredMessage.content_hash).where(
                        col(StoredMessage.recipient_inami) == recipient,
                        col(column).in_(unique[start : start + CHUNK]),
                    )
                )
                found.update({int(i): (m, h) for i, m, h in rows.all()})
        known_ids = {m for m, _ in found.values()}
        known_hashes = {h for _, h in found.values()}
        unknown = [i for i in message_ids if i not in known_ids] + [
            h for h in hashes if h not in known_hashes
        ]
        confirmed = 0
        row_ids = sorted(found)
        for start in range(0, len(row_ids), CHUNK):
            changed = await self.session.execute(
                update(StoredMessage)
                .where(
                    col(StoredMessage.id).in_(row_ids[start : start + CHUNK]),
                    col(StoredMessage.confirmed).is_(False),
                )
                .values(confirmed=True, confirmed_at=now)
                .returning(col(StoredMessage.id))
                .execution_options(synchronize_session=False)
            )
            confirmed += len(changed.all())
        return ConfirmResult(confirmed, len(row_ids) - confirmed, unknown)


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
