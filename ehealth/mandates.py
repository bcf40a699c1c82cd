"""Mandates: a principal provider lets a third party act for it for named services over a period.

No two mandates of one principal overlap for a service (:func:`ehealth.rules.plan_mandate_closures`):
a new one closes the previous one the day before its start. A previous mandate is closed as a whole
(all its services), because a mandate is one act of delegation.

A mandate is given by its principal (seed 003 annex 11.3): a provider's session creates, revokes and lists
only the mandates it gives (:mod:`ehealth.scope`); the administrator may do so for anyone. A session opened
under a mandate is a snapshot of the delegation: when the principal revokes the mandate, or a new mandate
closes it, every session opened under it ends (revocation log), and the mandatee logs in again under
whatever mandate is then in force.

The death, bankruptcy or liquidation of the principal or of the mandatee ends every mandate between them at
once (seed 001 §4, :meth:`Mandates.end_on_cessation`): the authentic source records the fact, the mandates
end the day before, the sessions opened under them end now. A new mandate may be given afterwards (by or
with the liquidator or curator).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from ehealth.audit import note
from ehealth.logs import Logs
from ehealth.models import MandateRow, SessionRow
from ehealth.repositories import CadastreRepository, MandateRepository
from ehealth.rules import MandateView, Period, check_end, plan_mandate_closures
from ehealth.scope import NOT_OWN_MANDATE, Actor
from ehealth.store import Database
from mycarenet_core.clock import Clock
from mycarenet_core.errors import McnCode, not_found


@dataclass(frozen=True)
class MandateRecord:
    """A mandate with its services (sorted names)."""

    row: MandateRow
    services: tuple[str, ...]

    @property
    def period(self) -> Period:
        return Period(self.row.valid_from, self.row.valid_to)


@dataclass(frozen=True)
class NewMandate:
    """A validated mandate request."""

    principal_inami: str
    mandatee_kind: str
    mandatee_id: str
    services: frozenset[str]
    period: Period


async def _records(repo: MandateRepository, rows: Sequence[MandateRow]) -> list[MandateRecord]:
    services = await repo.services([r.mandate_id for r in rows])
    return [MandateRecord(r, tuple(services[r.mandate_id])) for r in rows]


async def active_mandate(
    session: AsyncSession, principal: str, mandatee_kind: str, mandatee_id: str, day: dt.date
) -> MandateRecord | None:
    """The mandate from ``principal`` to the mandatee valid on ``day``; the latest started when several
    (for different services) are."""
    repo = MandateRepository(session)
    rows = await repo.search(
        principal_inami=principal, mandatee_id=mandatee_id, mandatee_kind=mandatee_kind, valid_on=day
    )
    if not rows:
        return None
    return (await _records(repo, rows[-1:]))[0]


class Mandates:
    """Create, revoke and list mandates."""

    def __init__(self, db: Database, clock: Clock, logs: Logs) -> None:
        self.db = db
        self.clock = clock
        self.logs = logs

    async def create(self, new: NewMandate, actor: Actor) -> tuple[MandateRecord, list[MandateRecord]]:
        """The created mandate and the mandates it closed (as they are now). Only the principal (or the
        administrator) gives a mandate; the sessions opened under a mandate it closes end."""
        note(subject=new.principal_inami)
        actor.check(new.principal_inami, NOT_OWN_MANDATE, f"a mandate given by {new.principal_inami}")
        async with self.logs.transaction() as log:
            session = log.session
            cadastre = CadastreRepository(session)
            if (
                await cadastre.provider(new.principal_inami) is None
                and await cadastre.organisation(new.principal_inami) is None
            ):
                raise not_found(
                    "PRINCIPAL_UNKNOWN",
                    f"principal {new.principal_inami} is not in the cadastre",
                    code=McnCode.PROVIDER_UNKNOWN,
                    field_path="mandate.principal_inami",
                )
            repo = MandateRepository(session)
            existing = await _records(repo, await repo.of_principal(new.principal_inami))
            views = [MandateView(m.row.mandate_id, frozenset(m.services), m.period) for m in existing]
            mandate_id = uuid.uuid4().hex
            closures = plan_mandate_closures(MandateView(mandate_id, new.services, new.period), views)
            closed: list[MandateRecord] = []
            for record in existing:
                if record.row.mandate_id in closures:
                    record.row.valid_to = closures[record.row.mandate_id]
                    closed.append(record)
            if closed:
                await log.end_sessions(col(SessionRow.mandate_id).in_([m.row.mandate_id for m in closed]))
            row = MandateRow(
                mandate_id=mandate_id,
                principal_inami=new.principal_inami,
                mandatee_kind=new.mandatee_kind,
                mandatee_id=new.mandatee_id,
                valid_from=new.period.start,
                valid_to=new.period.end,
                create_time=log.now,
            )
            await repo.add(row, sorted(new.services))
        return MandateRecord(row, tuple(sorted(new.services))), closed

    async def revoke(self, mandate_id: str, end: dt.date | None, actor: Actor) -> tuple[MandateRecord, int]:
        """End the mandate on ``end`` (today when None); never lengthens it. Ending it the day before its
        start cancels it. Only its principal (or the administrator) revokes it; every session opened under
        it ends now, whatever the end date: the principal withdrew the delegation those sessions carry.
        The mandate as it is now, and the number of sessions ended."""
        day = end or self.clock.today()
        async with self.logs.transaction() as log:
            repo = MandateRepository(log.session)
            row = await repo.get(mandate_id)
            if row is None:
                raise not_found("MANDATE_UNKNOWN", f"no mandate {mandate_id}")
            note(subject=row.principal_inami)
            actor.check(row.principal_inami, NOT_OWN_MANDATE, f"mandate {mandate_id}")
            check_end(day, row.valid_from, "end_date")
            row.valid_to = Period(row.valid_from, row.valid_to).ended_by(day).end
            ended = await log.end_sessions(col(SessionRow.mandate_id) == mandate_id)
            return (await _records(repo, [row]))[0], ended

    async def end_on_cessation(self, subject: str, day: dt.date | None) -> tuple[list[MandateRecord], int]:
        """End every mandate given by or to ``subject`` that runs on or after ``day`` (today when None): its
        last day becomes the day before (a mandate starting on or after ``day`` is cancelled). Death,
        bankruptcy and liquidation have the same effect (seed 001 §4). The mandates as they are now, and the
        number of sessions ended."""
        note(subject=subject)
        day = day or self.clock.today()
        async with self.logs.transaction() as log:
            repo = MandateRepository(log.session)
            rows = await repo.running_from(subject, day)
            for row in rows:  # the day before, or cancelled (ended the day before its start)
                last = max(day, row.valid_from) - dt.timedelta(days=1)
                row.valid_to = Period(row.valid_from, row.valid_to).ended_by(last).end
            ended = 0
            if rows:
                ended = await log.end_sessions(col(SessionRow.mandate_id).in_([r.mandate_id for r in rows]))
            return await _records(repo, rows), ended

    async def search(
        self,
        *,
        principal_inami: str,
        mandatee_id: str,
        valid_on: dt.date | None,
        after: tuple[dt.date, str] | None,
        limit: int,
        actor: Actor,
    ) -> list[MandateRecord]:
        """Mandates filtered; a provider's session sees only the mandates it gave (its own INAMI is the
        principal filter when none is given)."""
        if actor.own is not None:
            principal_inami = principal_inami or actor.own
            actor.check(principal_inami, NOT_OWN_MANDATE, f"the mandates given by {principal_inami}")
        async with self.db.read() as session:
            repo = MandateRepository(session)
            rows = await repo.search(
                principal_inami=principal_inami,
                mandatee_id=mandatee_id,
                valid_on=valid_on,
                after=after,
                limit=limit,
            )
            return await _records(repo, rows)
