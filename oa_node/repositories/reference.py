"""Reference data of an insurer: known providers, organisations, the tariff, and enrolments."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from oa_node import models as m
from oa_node import rules as r


@dataclass(frozen=True)
class OrganisationData:
    inami: str
    role: int
    name: str
    members: tuple[tuple[str, dt.date, dt.date | None], ...]


class ReferenceRepository:
    """Providers, organisations and tariffs. The caller owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def provider(self, inami: str) -> m.KnownProvider | None:
        return await self.session.get(m.KnownProvider, inami)

    async def organisation(self, inami: str) -> m.Organisation | None:
        return await self.session.get(m.Organisation, inami)

    async def providers(self, inamis: Iterable[str]) -> dict[str, m.KnownProvider]:
        wanted = sorted(set(inamis))
        if not wanted:
            return {}
        stmt = select(m.KnownProvider).where(col(m.KnownProvider.inami).in_(wanted))
        return {p.inami: p for p in (await self.session.execute(stmt)).scalars()}

    async def organisations(self, inamis: Iterable[str]) -> dict[str, m.Organisation]:
        wanted = sorted(set(inamis))
        if not wanted:
            return {}
        stmt = select(m.Organisation).where(col(m.Organisation.inami).in_(wanted))
        return {o.inami: o for o in (await self.session.execute(stmt)).scalars()}

    async def upsert_providers(self, providers: Sequence[m.KnownProvider]) -> int:
        for provider in providers:
            await self.session.merge(provider)
        await self.session.flush()
        return len(providers)

    async def upsert_organisations(self, organisations: Sequence[OrganisationData]) -> int:
        for org in organisations:
            await self.session.merge(m.Organisation(inami=org.inami, role=org.role, name=org.name))
            await self.session.execute(
                delete(m.OrganisationMember).where(col(m.OrganisationMember.organisation_inami) == org.inami)
            )
            await self.session.flush()
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
        stmt = (
            select(m.OrganisationMember)
            .where(col(m.OrganisationMember.member_inami).in_(wanted))
            .where(m.OrganisationMember.start <= day)
            .order_by(col(m.OrganisationMember.start))
        )
        found: dict[str, str] = {}
        for row in (await self.session.execute(stmt)).scalars():
            if row.end is None or day <= row.end:
                found[row.member_inami] = row.organisation_inami
        return found

    async def tariffs(self, year: int = 0) -> list[m.TariffLine]:
        stmt = select(m.TariffLine).order_by(col(m.TariffLine.year), col(m.TariffLine.category))
        if year:
            stmt = stmt.where(m.TariffLine.year == year)
        return list((await self.session.execute(stmt)).scalars())

    async def tariff_table(self) -> r.TariffTable:
        amounts: dict[int, dict[r.TariffCategory, Decimal]] = {}
        for line in await self.tariffs():
            amounts.setdefault(line.year, {})[r.TariffCategory(line.category)] = Decimal(line.amount)
        return r.TariffTable(amounts=amounts)

    async def seed_tariffs(self, table: Mapping[int, Mapping[r.TariffCategory, Decimal]]) -> None:
        """Load the default tariff when the table is empty (first start)."""
        if await self.tariffs():
            return
        for year, by_category in table.items():
            for category, amount in by_category.items():
                self.session.add(m.TariffLine(year=year, category=category.value, amount=f"{amount:.2f}"))
        await self.session.flush()


class EnrolmentRepository:
    """Enrolments for the electronic DMG (never removed)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, inami: str) -> m.Enrolment | None:
        return await self.session.get(m.Enrolment, inami)

    async def add(self, enrolment: m.Enrolment) -> None:
        self.session.add(enrolment)
        await self.session.flush()

    async def enrolled_on(self, inamis: Iterable[str], day: dt.date) -> frozenset[str]:
        """Those of ``inamis`` enrolled on ``day``."""
        wanted = sorted(set(inamis))
        if not wanted:
            return frozenset()
        stmt = select(m.Enrolment.inami).where(
            col(m.Enrolment.inami).in_(wanted),
            m.Enrolment.enrolled_since <= day,
        )
        return frozenset((await self.session.execute(stmt)).scalars())
