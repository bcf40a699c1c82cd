"""Reference data of an insurer: known providers, organisations, the tariff, and enrolments.

The reads of the write path (who is a provider, their supervisor and group, who is enrolled) are SQLAlchemy
Core statements built at import, run on the connection of the caller's session and returning rows; the
upserts of the back office and of the cadastre follower keep the ORM (they are not on a request's path)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, delete, insert, update
from sqlalchemy import select as core_select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from oa_node import models as m
from oa_node import rules as r

_providers = m.table_of(m.KnownProvider)
_organisations = m.table_of(m.Organisation)
_memberships = m.table_of(m.OrganisationMember)
_tariffs = m.table_of(m.TariffLine)
_enrolments = m.table_of(m.Enrolment)

PROVIDERS = core_select(_providers).where(_providers.c.inami.in_(bindparam("inamis", expanding=True)))
ORGANISATIONS = core_select(_organisations).where(
    _organisations.c.inami.in_(bindparam("inamis", expanding=True))
)
PROVIDER_EXISTS = core_select(_providers.c.inami).where(_providers.c.inami == bindparam("inami"))
GROUPS = (
    core_select(_memberships.c.member_inami, _memberships.c.organisation_inami, _memberships.c.end)
    .where(
        _memberships.c.member_inami.in_(bindparam("inamis", expanding=True)),
        _memberships.c.start <= bindparam("day"),
    )
    .order_by(_memberships.c.start)
)
TARIFFS = core_select(_tariffs).order_by(_tariffs.c.year, _tariffs.c.category)
ENROLMENT = core_select(_enrolments).where(_enrolments.c.inami == bindparam("inami"))
ADD_ENROLMENT = insert(_enrolments)
ENROLLED_ON = core_select(_enrolments.c.inami).where(
    _enrolments.c.inami.in_(bindparam("inamis", expanding=True)),
    _enrolments.c.enrolled_since <= bindparam("day"),
)
ENROLLED_SINCE = core_select(_enrolments.c.inami, _enrolments.c.enrolled_since).where(
    _enrolments.c.inami.in_(bindparam("inamis", expanding=True))
)


@dataclass(frozen=True)
class OrganisationData:
    inami: str
    role: int
    name: str
    members: tuple[tuple[str, dt.date, dt.date | None], ...]
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None


class ReferenceRepository:
    """Providers, organisations and tariffs. The caller owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def known(self, inami: str) -> bool:
        """Whether ``inami`` is a provider the insurer knows."""
        conn = await self.session.connection()
        return (await conn.execute(PROVIDER_EXISTS, {"inami": inami})).first() is not None

    async def providers(self, inamis: Iterable[str]) -> dict[str, Row[Any]]:
        """The provider rows of ``inamis`` (inami, role, names, supervisor, validity), by INAMI number."""
        wanted = sorted(set(inamis))
        if not wanted:
            return {}
        conn = await self.session.connection()
        return {row.inami: row for row in await conn.execute(PROVIDERS, {"inamis": wanted})}

    async def organisations(self, inamis: Iterable[str]) -> dict[str, Row[Any]]:
        """The organisation rows of ``inamis`` (inami, role, name, validity), by INAMI number."""
        wanted = sorted(set(inamis))
        if not wanted:
            return {}
        conn = await self.session.connection()
        return {row.inami: row for row in await conn.execute(ORGANISATIONS, {"inamis": wanted})}

    async def _provider_objects(self, inamis: Iterable[str]) -> dict[str, m.KnownProvider]:
        stmt = select(m.KnownProvider).where(col(m.KnownProvider.inami).in_(sorted(set(inamis))))
        return {p.inami: p for p in (await self.session.execute(stmt)).scalars()}

    async def _organisation_objects(self, inamis: Iterable[str]) -> dict[str, m.Organisation]:
        stmt = select(m.Organisation).where(col(m.Organisation.inami).in_(sorted(set(inamis))))
        return {o.inami: o for o in (await self.session.execute(stmt)).scalars()}

    async def upsert_providers(self, providers: Sequence[m.KnownProvider]) -> int:
        """Create or replace providers (the last one wins when an INAMI number comes twice)."""
        latest = {p.inami: p for p in providers}
        if not latest:
            return len(providers)
        existing = await self._provider_objects(latest)
        for inami, provider in latest.items():
            row = existing.get(inami)
            if row is None:
                self.session.add(provider)
                continue
            row.role, row.first_name, row.last_name = provider.role, provider.first_name, provider.last_name
            row.supervisor_inami = provider.supervisor_inami
            row.valid_from, row.valid_until = provider.valid_from, provider.valid_until
        await self.session.flush()
        return len(providers)

    async def upsert_organisations(self, organisations: Sequence[OrganisationData]) -> int:
        """Create or replace organisations with their whole membership (the last one wins)."""
        latest = {o.inami: o for o in organisations}
        if not latest:
            return 0
        existing = await self._organisation_objects(latest)
        await self.session.execute(
            delete(m.OrganisationMember).where(
                col(m.OrganisationMember.organisation_inami).in_(sorted(latest))
            )
        )
        for inami, org in latest.items():
            row = existing.get(inami)
            if row is None:
                row = m.Organisation(inami=inami)
                self.session.add(row)
            row.role, row.name = org.role, org.name
            row.valid_from, row.valid_until = org.valid_from, org.valid_until
        await self.session.flush()
        for org in latest.values():
            for member, start, end in org.members:
                self.session.add(
                    m.OrganisationMember(
                        organisation_inami=org.inami, member_inami=member, start=start, end=end
                    )
                )
        await self.session.flush()
        return len(organisations)

    async def groups_on(self, inamis: Iterable[str], day: dt.date) -> dict[str, str]:
        """Provider -> the organisation (group practice or medical house) they belong to on ``day``."""
        wanted = sorted(set(inamis))
        if not wanted:
            return {}
        conn = await self.session.connection()
        found: dict[str, str] = {}
        for row in await conn.execute(GROUPS, {"inamis": wanted, "day": day}):
            if row.end is None or day <= row.end:
                found[row.member_inami] = row.organisation_inami
        return found

    async def tariffs(self, year: int = 0) -> list[Row[Any]]:
        conn = await self.session.connection()
        rows = (await conn.execute(TARIFFS)).all()
        return [row for row in rows if not year or row.year == year]

    async def tariff_table(self) -> r.TariffTable:
        amounts: dict[int, dict[r.TariffCategory, Decimal]] = {}
        held: dict[tuple[int, r.TariffCategory], dt.date] = {}
        for line in await self.tariffs():
            category = r.TariffCategory(line.category)
            amounts.setdefault(line.year, {})[category] = Decimal(line.amount)
            if line.payable_from is not None:
                held[(line.year, category)] = line.payable_from
        return r.TariffTable(amounts=amounts, payable_from=held)

    async def seed_tariffs(self, table: r.TariffTable) -> None:
        """Load the default tariff when the table is empty (first start), each line with its source."""
        if await self.tariffs():
            return
        for year, by_category in table.amounts.items():
            for category, amount in by_category.items():
                self.session.add(
                    m.TariffLine(
                        year=year,
                        category=category.value,
                        amount=f"{amount:.2f}",
                        source=r.tariff_source(year),
                        payable_from=table.not_paid_before(year, category),
                    )
                )
        await self.session.flush()


class CadastreRepository:
    """How far the node has applied eHealth's cadastre change log (one row, created at start)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def applied(self) -> int:
        """The last applied sequence (0 before the first change)."""
        row = await self.session.get(m.CadastrePosition, 1)
        return row.applied_sequence if row is not None else 0

    async def claim(self) -> int:
        """Take the applier's lock (an UPDATE first: the row lock on PostgreSQL, the write lock on SQLite,
        so that two appliers never both apply a change) and return the last applied sequence."""
        stmt = update(m.CadastrePosition).where(col(m.CadastrePosition.id) == 1)
        await self.session.execute(stmt.values(applied_sequence=m.CadastrePosition.applied_sequence))
        row = await self.session.get(m.CadastrePosition, 1, populate_existing=True)
        if row is None:
            row = m.CadastrePosition(id=1, applied_sequence=0)
            self.session.add(row)
            await self.session.flush()
        return row.applied_sequence

    async def advance(self, sequence: int, now: dt.datetime) -> None:
        """Record ``sequence`` as applied (in the transaction that applied the changes)."""
        row = await self.session.get(m.CadastrePosition, 1)
        assert row is not None, "claim() first"
        row.applied_sequence, row.applied_at = sequence, now
        await self.session.flush()


class EnrolmentRepository:
    """Enrolments for the electronic DMG (never removed)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, inami: str) -> Row[Any] | None:
        conn = await self.session.connection()
        return (await conn.execute(ENROLMENT, {"inami": inami})).first()

    async def add(self, enrolment: dict[str, Any]) -> None:
        conn = await self.session.connection()
        await conn.execute(ADD_ENROLMENT, [enrolment])

    async def enrolled_on(self, inamis: Iterable[str], day: dt.date) -> frozenset[str]:
        """Those of ``inamis`` enrolled on ``day``."""
        wanted = sorted(set(inamis))
        if not wanted:
            return frozenset()
        conn = await self.session.connection()
        return frozenset((await conn.execute(ENROLLED_ON, {"inamis": wanted, "day": day})).scalars())

    async def enrolled_since(self, inamis: Iterable[str]) -> dict[str, dt.date]:
        """Those of ``inamis`` who are enrolled, with the date their enrolment starts."""
        wanted = sorted(set(inamis))
        if not wanted:
            return {}
        conn = await self.session.connection()
        rows = await conn.execute(ENROLLED_SINCE, {"inamis": wanted})
        return {row.inami: row.enrolled_since for row in rows}
