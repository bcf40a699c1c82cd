"""The therapeutic-relation register: register, revoke, check, list, and the DMG relation moves.

Organisation rule: a relation held by an organisation (medical house or group practice) counts, on a date,
for every provider who is a member of that organisation on that date (membership and organisation both
valid). So a GP of a medical house that holds a patient's DMG passes the check for that patient.

A relation is registered by the provider who has it (seed 000 §1.3.2.2: it reads the patient's eID): a
provider's session registers, revokes and lists only its own relations (:mod:`ehealth.scope`); the
administrator may do so for anyone, and the hub moves DMG relations after an insurer committed a holding.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ehealth.audit import note
from ehealth.models import DmgTransferRow, RelationRow
from ehealth.repositories import CadastreRepository, RelationRepository
from ehealth.rules import Period, Proof, Relation, check_end, plan_dmg_transfer, strongest_relation
from ehealth.scope import NOT_OWN_RELATION, Actor
from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.errors import McnCode, not_found


def to_relation(row: RelationRow) -> Relation:
    return Relation(row.relation_id, row.provider_inami, row.patient_niss, Proof(row.proof), period_of(row))


def period_of(row: RelationRow) -> Period:
    return Period(row.valid_from, row.valid_to)


@dataclass(frozen=True)
class TransferResult:
    new_relation: RelationRow
    ended_relation: RelationRow | None
    replayed: bool


class Relations:
    """Therapeutic relations over one database."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self.factory = factory
        self.clock = clock

    def _new_row(self, provider: str, patient: str, proof: Proof, period: Period) -> RelationRow:
        return RelationRow(
            relation_id=uuid.uuid4().hex,
            provider_inami=provider,
            patient_niss=patient,
            proof=proof.value,
            valid_from=period.start,
            valid_to=period.end,
            create_time=self.clock.now(),
        )

    async def register(
        self, provider: str, patient: str, proof: Proof, period: Period, actor: Actor
    ) -> RelationRow:
        """Register a relation; an existing one with the same proof whose period covers the new one is
        returned instead of a duplicate. The provider (or organisation) must be in the cadastre, and be the
        caller when the caller is a provider's session."""
        note(subject=provider)
        actor.check(provider, NOT_OWN_RELATION, f"a relation of {provider}")
        async with transaction(self.factory) as session:
            cadastre = CadastreRepository(session)
            if await cadastre.provider(provider) is None and await cadastre.organisation(provider) is None:
                raise not_found(
                    "PROVIDER_UNKNOWN",
                    f"provider {provider} is not in the cadastre",
                    code=McnCode.PROVIDER_UNKNOWN,
                    field_path="provider_inami",
                )
            repo = RelationRepository(session)
            for row in await repo.of_pair(provider, patient, proof.value):
                if period_of(row).covers(period):
                    return row
            return await repo.add(self._new_row(provider, patient, proof, period))

    async def revoke(self, relation_id: str, end: dt.date | None, actor: Actor) -> RelationRow:
        """End the relation on ``end`` (today when None); never lengthens it. A provider's session ends only
        its own relations."""
        day = end or self.clock.today()
        async with transaction(self.factory) as session:
            row = await RelationRepository(session).get(relation_id)
            if row is None:
                raise not_found("RELATION_UNKNOWN", f"no relation {relation_id}")
            note(subject=row.provider_inami)
            actor.check(row.provider_inami, NOT_OWN_RELATION, f"relation {relation_id}")
            check_end(day, row.valid_from, "end_date")
            row.valid_to = period_of(row).ended_by(day).end
            return row

    async def check(self, provider: str, patient: str, day: dt.date | None) -> RelationRow | None:
        """The strongest relation letting ``provider`` see ``patient`` on ``day`` (today when None)."""
        day = day or self.clock.today()
        async with transaction(self.factory) as session:
            rows = await RelationRepository(session).granting(provider, patient, day)
        best = strongest_relation((to_relation(r) for r in rows), provider, day)
        return next((r for r in rows if best is not None and r.relation_id == best.relation_id), None)

    async def search(
        self,
        *,
        provider_inami: str,
        patient_niss: str,
        valid_on: dt.date | None,
        after: tuple[dt.date, str] | None,
        limit: int,
        actor: Actor,
    ) -> list[RelationRow]:
        """Relations filtered; a provider's session sees only its own (its INAMI is the provider filter
        when none is given)."""
        if actor.own is not None:
            provider_inami = provider_inami or actor.own
            actor.check(provider_inami, NOT_OWN_RELATION, f"the relations of {provider_inami}")
        async with transaction(self.factory) as session:
            return await RelationRepository(session).search(
                provider_inami=provider_inami,
                patient_niss=patient_niss,
                valid_on=valid_on,
                after=after,
                limit=limit,
            )

    async def transfer_dmg(
        self, patient: str, new_holder: str, previous_holder: str, start: dt.date, source_reference: str
    ) -> TransferResult:
        """Move the DMG relation (see :func:`ehealth.rules.plan_dmg_transfer`); idempotent by
        ``source_reference``: a replay changes nothing and answers what the first application did."""
        note(subject=new_holder)
        try:
            return await self._transfer(patient, new_holder, previous_holder, start, source_reference)
        except IntegrityError:
            # A concurrent call with the same reference won the race: answer as a replay.
            return await self._transfer(patient, new_holder, previous_holder, start, source_reference)

    async def _transfer(
        self, patient: str, new_holder: str, previous_holder: str, start: dt.date, source_reference: str
    ) -> TransferResult:
        async with transaction(self.factory) as session:
            repo = RelationRepository(session)
            applied = await repo.applied_transfer(source_reference)
            if applied is not None:
                new_row = await repo.get(applied.new_relation_id)
                ended = await repo.get(applied.ended_relation_id) if applied.ended_relation_id else None
                assert new_row is not None
                return TransferResult(new_row, ended, replayed=True)
            rows = {r.relation_id: r for r in await repo.dmg_relations(patient, Proof.DMG.value)}
            plan = plan_dmg_transfer([to_relation(r) for r in rows.values()], new_holder, start)
            ended_rows = []
            for relation_id, end in sorted(plan.ends.items()):
                rows[relation_id].valid_to = end
                ended_rows.append(rows[relation_id])
            if plan.reuse_id is not None:
                new_row = rows[plan.reuse_id]
                new_row.valid_to = plan.new_end
            else:
                new_row = await repo.add(
                    self._new_row(new_holder, patient, Proof.DMG, Period(start, plan.new_end))
                )
            # The relation reported as ended: the previous holder's when named, else the first one ended.
            ended_row = next(
                (r for r in ended_rows if r.provider_inami == previous_holder),
                None if previous_holder else next(iter(ended_rows), None),
            )
            await repo.record_transfer(
                DmgTransferRow(
                    source_reference=source_reference,
                    patient_niss=patient,
                    new_relation_id=new_row.relation_id,
                    ended_relation_id=ended_row.relation_id if ended_row else None,
                    apply_time=self.clock.now(),
                )
            )
            return TransferResult(new_row, ended_row, replayed=False)
