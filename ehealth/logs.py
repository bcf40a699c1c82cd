"""eHealth's three followed logs: the revocation log (sessions ended, followed by every verifier of the
mesh), the cadastre change log (providers and organisations, followed by the insurers and the hub) and the
register's change log (therapeutic relations, followed by the hub's cache of CheckRelation answers).

A follower asks for what comes after the last sequence number it saw, so a number must never become visible
after a higher one: on PostgreSQL numbers are drawn when a row is inserted, not when its transaction commits.
Every transaction that appends to a log therefore runs under one lock of the process (:class:`Logs`),
which makes commit order the sequence order; the watchers are woken once it has committed (no polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from ehealth.models import CadastreChangeRow, RelationChangeRow, RevocationRow, SessionRow
from ehealth.rules import Period
from ehealth.store import Database
from mycarenet_core.clock import BRUSSELS, Clock

T = TypeVar("T")


def end_of_day(day: dt.date) -> dt.datetime:
    """The instant a civil date of Belgium ends (midnight that starts the next day), in UTC: a period that
    ends on ``day`` covers every instant before it."""
    midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=BRUSSELS)
    return midnight.astimezone(dt.UTC)


class Feed:
    """In-process notification of new entries of a log: watchers wait on the current event, which a publish
    sets and replaces. :meth:`close` wakes every watcher for good (server stop)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def changed(self) -> asyncio.Event:
        """The event the next publish sets; take it *before* reading, so that nothing is missed."""
        return self._event

    def publish(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def close(self) -> None:
        self.closed = True
        self._event.set()

    async def follow(
        self,
        after: int,
        read: Callable[[int, int], Awaitable[Sequence[T]]],
        position: Callable[[T], int],
        *,
        batch: int = 500,
    ) -> AsyncIterator[T]:
        """The entries after ``after`` (``read(after, limit)``), then each new one as it is committed, woken
        by :meth:`publish` (no polling); ends when the feed is closed or the caller stops iterating."""
        last = after
        while not self.closed:
            changed = self.changed()
            entries = await read(last, batch)
            for entry in entries:
                last = position(entry)
                yield entry
            if len(entries) < batch:
                await changed.wait()


class LogWriter:
    """What one transaction appends to the logs (see :meth:`Logs.transaction`)."""

    def __init__(self, session: AsyncSession, now: dt.datetime) -> None:
        self.session = session
        self.now = now
        self.revoked = 0
        self.changes = 0
        self.relations = 0

    async def end_session(self, session_id: str, expire_time: dt.datetime) -> bool:
        """Revoke one session; False when it had already been ended."""
        present = await self.session.scalar(
            select(col(RevocationRow.sequence)).where(col(RevocationRow.session_id) == session_id)
        )
        if present is not None:
            return False
        self.session.add(RevocationRow(session_id=session_id, revoke_time=self.now, expire_time=expire_time))
        await self.session.flush()
        self.revoked += 1
        return True

    async def end_sessions(self, where: ColumnElement[bool]) -> int:
        """Revoke every live session (not expired, not already ended) that matches ``where``; how many."""
        ended = exists().where(col(RevocationRow.session_id) == col(SessionRow.session_id))
        stmt = (
            select(col(SessionRow.session_id), col(SessionRow.expire_time))
            .where(where, col(SessionRow.expire_time) > self.now, ~ended)
            .order_by(col(SessionRow.issue_time), col(SessionRow.session_id))
        )
        rows = (await self.session.execute(stmt)).all()
        self.session.add_all(
            RevocationRow(session_id=sid, revoke_time=self.now, expire_time=expire) for sid, expire in rows
        )
        await self.session.flush()
        self.revoked += len(rows)
        return len(rows)

    async def end_sessions_outside(self, party: str, kind: str, validity: Period) -> int:
        """End the sessions a validity no longer covers: those of ``party`` itself (subject ``kind``), those
        opened under mandates it gave and the pharmacy sessions it opened as their pharmacist, when the
        validity does not contain today or ends before they expire. A validity that still covers a session
        changes nothing for it."""
        today = self.now.astimezone(BRUSSELS).date()
        of_party = or_(
            and_(col(SessionRow.subject_id) == party, col(SessionRow.subject_kind) == kind),
            col(SessionRow.principal_inami) == party,
            col(SessionRow.user_inami) == party,
        )
        if not validity.contains(today):
            return await self.end_sessions(of_party)
        if validity.end is None:
            return 0
        return await self.end_sessions(and_(of_party, col(SessionRow.expire_time) > end_of_day(validity.end)))

    async def end_sessions_of_users_gone(self, organisation: str, members_today: Iterable[str]) -> int:
        """End the sessions of ``organisation`` (a pharmacy's) opened by a pharmacist who is no longer one
        of its members today (seed 003 §8.2.2.3: the pharmacist of record must be the pharmacy's)."""
        return await self.end_sessions(
            and_(
                col(SessionRow.subject_id) == organisation,
                col(SessionRow.user_inami).is_not(None),
                col(SessionRow.user_inami).not_in(list(members_today)),
            )
        )

    async def change(self, kind: str, inami: str) -> int:
        """Append the cadastre change of one entry (its previous entry leaves the compacted log); the new
        sequence number."""
        await self.session.execute(
            delete(CadastreChangeRow).where(
                col(CadastreChangeRow.kind) == kind, col(CadastreChangeRow.inami) == inami
            )
        )
        row = CadastreChangeRow(change_time=self.now, kind=kind, inami=inami)
        self.session.add(row)
        await self.session.flush()
        assert row.sequence is not None
        self.changes += 1
        return row.sequence

    async def relation_changed(self, relation_id: str) -> int:
        """Append the change of one relation to the register's log (its previous entry leaves the compacted
        log); the new sequence number. The relation row must be flushed already (a reader joins it)."""
        await self.session.execute(
            delete(RelationChangeRow).where(col(RelationChangeRow.relation_id) == relation_id)
        )
        row = RelationChangeRow(change_time=self.now, relation_id=relation_id)
        self.session.add(row)
        await self.session.flush()
        assert row.sequence is not None
        self.relations += 1
        return row.sequence


class Logs:
    """The followed logs of one eHealth process: their writer lock and their feeds."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.revocations = Feed()
        self.cadastre = Feed()
        self.relations = Feed()
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[LogWriter]:
        """One transaction that may append to the logs: committed on success (then the watchers of what
        it appended are woken), rolled back on any exception. One at a time in this process."""
        async with self._lock:
            async with self.db.transaction() as session:
                writer = LogWriter(session, self.clock.now())
                yield writer
            if writer.revoked:
                self.revocations.publish()
            if writer.changes:
                self.cadastre.publish()
            if writer.relations:
                self.relations.publish()

    def close(self) -> None:
        """Wake every watcher for good (server stop)."""
        self.revocations.close()
        self.cadastre.close()
        self.relations.close()
