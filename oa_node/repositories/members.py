"""Members, their affiliation periods, and the affiliation feed (sequence order = commit order)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, insert, update
from sqlalchemy import select as core_select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from mycarenet_core import dates
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from oa_node import models as m

MemberRow = Row[Any]
"""A member as read: every column of ``oa_member`` as an attribute."""

_members = m.table_of(m.Member)
_affiliations = m.table_of(m.Affiliation)
_insurability = m.table_of(m.InsurabilityRow)
_care = m.table_of(m.CareStatusRow)
STATUSES = (
    core_select(_insurability)
    .where(_insurability.c.niss == bindparam("niss"))
    .order_by(_insurability.c.start)
)
CARE = core_select(_care).where(_care.c.niss == bindparam("niss")).order_by(_care.c.start, _care.c.kind)
MEMBER_BY_NISS = core_select(_members).where(_members.c.niss == bindparam("key"))
MEMBER_BY_NUMBER = core_select(_members).where(_members.c.registration_number == bindparam("key"))
PERIODS = (
    core_select(_affiliations.c.start, _affiliations.c.end)
    .where(_affiliations.c.niss == bindparam("niss"))
    .order_by(_affiliations.c.start)
)

Period = tuple[dt.date, dt.date | None]
InsurabilityFields = tuple[dt.date, dt.date, str, str, bool, bool]
"""start, end, CT1, CT2, preferential rate, maximum billing."""
CareFields = tuple[str, dt.date, dt.date | None]
"""kind, start, end."""


@dataclass(frozen=True)
class MemberData:
    """A member as the back office sends it (already validated)."""

    niss: str
    mutuality_code: str
    registration_number: str
    first_name: str = ""
    last_name: str = ""
    birth_date: dt.date | None = None
    sex: int = 0
    death_date: dt.date | None = None
    chronic_condition: bool = False
    medical_house_inami: str | None = None
    medical_house_start: dt.date | None = None
    medical_house_end: dt.date | None = None
    affiliations: tuple[Period, ...] = ()
    insurability: tuple[InsurabilityFields, ...] = ()
    """Empty: none recorded (the default of :func:`oa_node.rules.insurability.default_periods` applies)."""
    care_statuses: tuple[CareFields, ...] = ()


@dataclass(frozen=True)
class FeedEntry:
    """One change of the affiliation feed."""

    sequence: int
    niss: str
    registration_number: str
    periods: tuple[Period, ...]


@dataclass(frozen=True)
class UpsertResult:
    created: int
    updated: int
    last_sequence: int


def _periods_json(periods: Sequence[Period]) -> str:
    return json.dumps([[s.isoformat(), e.isoformat() if e else None] for s, e in periods])


def _periods_from_json(text: str) -> tuple[Period, ...]:
    return tuple(
        (dt.date.fromisoformat(s), dt.date.fromisoformat(e) if e else None) for s, e in json.loads(text)
    )


def covers(periods: Sequence[Period], day: dt.date) -> bool:
    """Whether one of the periods contains ``day``."""
    return any(start <= day and (end is None or day <= end) for start, end in periods)


_MEMBER_FIELDS = (
    "mutuality_code",
    "registration_number",
    "first_name",
    "last_name",
    "birth_date",
    "sex",
    "death_date",
    "chronic_condition",
    "medical_house_inami",
    "medical_house_start",
    "medical_house_end",
)


class MemberRepository:
    """Members and the feed. The caller owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, niss: str) -> MemberRow | None:
        """The member's row (every column as an attribute), None when unknown."""
        conn = await self.session.connection()
        return (await conn.execute(MEMBER_BY_NISS, {"key": niss})).first()

    async def by_registration(self, registration_number: str) -> MemberRow | None:
        conn = await self.session.connection()
        return (await conn.execute(MEMBER_BY_NUMBER, {"key": registration_number})).first()

    async def periods(self, niss: str) -> tuple[Period, ...]:
        conn = await self.session.connection()
        return tuple((row.start, row.end) for row in await conn.execute(PERIODS, {"niss": niss}))

    async def statuses(self, niss: str) -> ms_pb2.Member:
        """The member's insurability periods and care statuses as recorded (a Member with only those)."""
        conn = await self.session.connection()
        found = ms_pb2.Member()
        for row in await conn.execute(STATUSES, {"niss": niss}):
            found.insurability.add(
                period=common_pb2.Period(start=dates.to_proto(row.start), end=dates.to_proto(row.end)),
                status=insurability_pb2.InsurabilityStatus(
                    ct1=row.ct1,
                    ct2=row.ct2,
                    preferential_rate=row.preferential_rate,
                    maximum_billing=row.maximum_billing,
                ),
            )
        for row in await conn.execute(CARE, {"niss": niss}):
            found.care_statuses.add(
                kind=insurability_pb2.CareStatusKind.Value(f"CARE_STATUS_KIND_{row.kind}"),
                period=common_pb2.Period(start=dates.to_proto(row.start), end=dates.to_proto(row.end)),
            )
        return found

    async def upsert(self, members: Sequence[MemberData], *, now: dt.datetime) -> UpsertResult:
        """Create or replace members; append a feed change for each new member, each new set of
        periods and each new member number. Takes the feed lock first (see :class:`m.FeedHead`).

        Works on the whole batch at once (one read of the existing rows, one write), so that loading a
        national population in batches stays fast."""
        head = await self._lock_feed()
        created = updated = 0
        changes: list[MemberData] = []
        wanted = list(dict.fromkeys(d.niss for d in members))
        rows = {
            row.niss: row
            for row in (
                await self.session.execute(select(m.Member).where(col(m.Member.niss).in_(wanted)))
            ).scalars()
        }
        old_periods: dict[str, list[m.Affiliation]] = {}
        if rows:
            stmt = select(m.Affiliation).where(col(m.Affiliation.niss).in_(list(rows)))
            for aff in (await self.session.execute(stmt)).scalars():
                old_periods.setdefault(aff.niss, []).append(aff)
        before: dict[str, tuple[Period, ...]] = {}
        numbers: dict[str, str | None] = {}
        for data in members:
            row = rows.get(data.niss)
            if data.niss not in before:
                before[data.niss] = tuple(
                    sorted(((a.start, a.end) for a in old_periods.get(data.niss, [])), key=lambda p: p[0])
                )
                numbers[data.niss] = row.registration_number if row is not None else None
            if row is None:
                row = m.Member(
                    niss=data.niss,
                    mutuality_code=data.mutuality_code,
                    registration_number=data.registration_number,
                )
                self.session.add(row)
                rows[data.niss] = row
                created += 1
            else:
                updated += 1
            for name in _MEMBER_FIELDS:
                setattr(row, name, getattr(data, name))
        # Members first (the periods refer to them), then the periods that changed.
        await self.session.flush()
        for data in members:
            new_periods = tuple(sorted(data.affiliations, key=lambda p: p[0]))
            existed = numbers[data.niss] is not None
            if not existed or before[data.niss] != new_periods:
                for old in old_periods.pop(data.niss, []):
                    await self.session.delete(old)
                fresh = [m.Affiliation(niss=data.niss, start=start, end=end) for start, end in new_periods]
                self.session.add_all(fresh)
                old_periods[data.niss] = fresh
                before[data.niss] = new_periods
                changes.append(data)
            elif numbers[data.niss] != data.registration_number:
                changes.append(data)
            numbers[data.niss] = data.registration_number
        await self.session.flush()
        await self._replace_statuses(members)
        last = head.last_sequence
        for data in changes:
            last += 1
            self.session.add(
                m.AffiliationChangeRow(
                    sequence=last,
                    niss=data.niss,
                    registration_number=data.registration_number,
                    periods_json=_periods_json(sorted(data.affiliations, key=lambda p: p[0])),
                    created_at=now,
                )
            )
        head.last_sequence = last
        await self.session.flush()
        return UpsertResult(created, updated, last)

    async def _replace_statuses(self, members: Sequence[MemberData]) -> None:
        """Each member's insurability periods and care statuses become those given (the last given for a
        NISS named twice)."""
        latest = {data.niss: data for data in members}
        conn = await self.session.connection()
        for table in (_insurability, _care):
            await conn.execute(delete(table).where(table.c.niss.in_(list(latest))))
        periods = [
            {
                "niss": niss,
                "start": start,
                "end": end,
                "ct1": ct1,
                "ct2": ct2,
                "preferential_rate": preferential,
                "maximum_billing": maximum,
            }
            for niss, data in latest.items()
            for start, end, ct1, ct2, preferential, maximum in data.insurability
        ]
        care = [
            {"niss": niss, "kind": kind, "start": start, "end": end}
            for niss, data in latest.items()
            for kind, start, end in data.care_statuses
        ]
        if periods:
            await conn.execute(insert(_insurability), periods)
        if care:
            await conn.execute(insert(_care), care)

    async def _lock_feed(self) -> m.FeedHead:
        await self.session.execute(
            update(m.FeedHead)
            .where(col(m.FeedHead.id) == m.AFFILIATION_FEED)
            .values(last_sequence=m.FeedHead.last_sequence)
        )
        head = await self.session.get(m.FeedHead, m.AFFILIATION_FEED, populate_existing=True)
        if head is None:
            raise RuntimeError("feed head row missing: schema not initialised")
        return head

    async def changes_after(self, after_sequence: int, limit: int) -> list[FeedEntry]:
        stmt = (
            select(m.AffiliationChangeRow)
            .where(m.AffiliationChangeRow.sequence > after_sequence)
            .order_by(col(m.AffiliationChangeRow.sequence))
            .limit(limit)
        )
        return [
            FeedEntry(c.sequence, c.niss, c.registration_number, _periods_from_json(c.periods_json))
            for c in (await self.session.execute(stmt)).scalars()
        ]

    async def last_sequence(self) -> int:
        stmt = select(func.coalesce(func.max(m.AffiliationChangeRow.sequence), 0))
        return int((await self.session.execute(stmt)).scalar_one())
