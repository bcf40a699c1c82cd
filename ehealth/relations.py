"""The therapeutic-relation register: register, revoke, check, list, the DMG relation moves, and the
register's change log.

Organisation rule: a relation held by an organisation (medical house or group practice) counts, on a date,
for every provider who is a member of that organisation on that date (membership and organisation both
valid). So a GP of a medical house that holds a patient's DMG passes the check for that patient.

A relation is registered by the provider who has it (seed 000 §1.3.2.2: it reads the patient's eID): a
provider's session registers, revokes and lists only its own relations (:mod:`ehealth.scope`); the
administrator may do so for anyone. The DMG relation follows the holder each insurer commits: eHealth reads
every insurer's holder-change feed (:mod:`ehealth.holders`) and applies each change here
(:meth:`Relations.apply_move`), exactly once; ``TransferDmgRelation`` is left to the administrator.

The check is the hot path (the hub's fallback when its cache of answers cannot answer): ONE statement built
at import (:data:`ehealth.repositories.CHECK_RELATION`), read without a write transaction. Every change of
the register (register, revoke, DMG move, end) appends to the compacted change log in its own transaction
(:meth:`ehealth.logs.LogWriter.relation_changed`), which the hub follows (:meth:`Relations.changes`,
:meth:`Relations.watch_changes`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import IntegrityError

from ehealth.audit import note
from ehealth.inputs import DmgMove, NewRelation
from ehealth.logs import Logs, LogWriter
from ehealth.models import DmgTransferRow, RelationRow
from ehealth.repositories import (
    CHECK_RELATION,
    RELATION_CHANGES,
    RELATION_HEAD,
    CadastreRepository,
    RelationRepository,
)
from ehealth.rules import Period, Proof, Relation, check_end, plan_dmg_end, plan_dmg_transfer
from ehealth.scope import NOT_OWN_RELATION, Actor
from ehealth.store import Database, Query
from mycarenet_core.clock import Clock
from mycarenet_core.errors import McnCode, not_found

_CHECK = Query(CHECK_RELATION)


class RelationLike(Protocol):
    """A relation as stored: an ORM row of a write or a Core row of a read."""

    @property
    def relation_id(self) -> str: ...
    @property
    def provider_inami(self) -> str: ...
    @property
    def patient_niss(self) -> str: ...
    @property
    def proof(self) -> str: ...
    @property
    def valid_from(self) -> dt.date: ...
    @property
    def valid_to(self) -> dt.date | None: ...


@dataclass(frozen=True)
class _Found:
    relation_id: str
    provider_inami: str
    patient_niss: str
    proof: str
    valid_from: dt.date
    valid_to: dt.date | None


class RelationChange(RelationLike, Protocol):
    """One entry of the register's change log with the relation as it is now."""

    @property
    def sequence(self) -> int: ...
    @property
    def change_time(self) -> dt.datetime: ...


def to_relation(row: RelationLike) -> Relation:
    return Relation(row.relation_id, row.provider_inami, row.patient_niss, Proof(row.proof), period_of(row))


def period_of(row: RelationLike) -> Period:
    return Period(row.valid_from, row.valid_to)


def relation_row(provider: str, patient: str, proof: Proof, period: Period, now: dt.datetime) -> RelationRow:
    return RelationRow(
        relation_id=uuid.uuid4().hex,
        provider_inami=provider,
        patient_niss=patient,
        proof=proof.value,
        valid_from=period.start,
        valid_to=period.end,
        create_time=now,
    )


@dataclass(frozen=True)
class TransferResult:
    """What a DMG move did: the new holder's relation (None for a move to no one), the relation it reports
    as ended, and whether the source reference had been applied before (then nothing changed)."""

    new_relation: RelationRow | None
    ended_relation: RelationRow | None
    replayed: bool


class Relations:
    """Therapeutic relations over one database."""

    def __init__(self, db: Database, clock: Clock, logs: Logs) -> None:
        self.db = db
        self.clock = clock
        self.logs = logs

    async def register(self, new: NewRelation, actor: Actor) -> RelationRow:
        """Register a relation; an existing one with the same proof whose period covers the new one is
        returned instead of a duplicate. The provider (or organisation) must be in the cadastre, and be the
        caller when the caller is a provider's session."""
        provider, patient = new.provider_inami, new.patient_niss
        note(subject=provider)
        actor.check(provider, NOT_OWN_RELATION, f"a relation of {provider}")
        async with self.logs.transaction() as log:
            cadastre = CadastreRepository(log.session)
            if await cadastre.provider(provider) is None and await cadastre.organisation(provider) is None:
                raise not_found(
                    "PROVIDER_UNKNOWN",
                    f"provider {provider} is not in the cadastre",
                    code=McnCode.PROVIDER_UNKNOWN,
                    field_path="provider_inami",
                )
            repo = RelationRepository(log.session)
            for row in await repo.of_pair(provider, patient, new.proof.value):
                if period_of(row).covers(new.period):
                    return row
            row = await repo.add(relation_row(provider, patient, new.proof, new.period, log.now))
            await log.relation_changed(row.relation_id)
            return row

    async def revoke(self, relation_id: str, end: dt.date | None, actor: Actor) -> RelationRow:
        """End the relation on ``end`` (today when None); never lengthens it. A provider's session ends only
        its own relations."""
        day = end or self.clock.today()
        async with self.logs.transaction() as log:
            row = await RelationRepository(log.session).get(relation_id)
            if row is None:
                raise not_found("RELATION_UNKNOWN", f"no relation {relation_id}")
            note(subject=row.provider_inami)
            actor.check(row.provider_inami, NOT_OWN_RELATION, f"relation {relation_id}")
            check_end(day, row.valid_from, "end_date")
            end_now = period_of(row).ended_by(day).end
            if end_now != row.valid_to:
                row.valid_to = end_now
                await log.session.flush()
                await log.relation_changed(relation_id)
            return row

    async def check(self, provider: str, patient: str, day: dt.date | None) -> RelationLike | None:
        """The strongest relation letting ``provider`` see ``patient`` on ``day`` (today when None): one
        pre-built statement, no write transaction."""
        params = {"provider": provider, "patient": patient, "day": day or self.clock.today()}
        found = await self.db.first(_CHECK, params)
        return None if found is None else _Found(*found)

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
        async with self.db.read() as session:
            return await RelationRepository(session).search(
                provider_inami=provider_inami,
                patient_niss=patient_niss,
                valid_on=valid_on,
                after=after,
                limit=limit,
            )

    # --- the DMG relation moves -------------------------------------------------------------------------

    async def transfer_dmg(self, move: DmgMove) -> TransferResult:
        """Move the DMG relation (the administrator's ``TransferDmgRelation``); idempotent by the source
        reference: a replay changes nothing and answers what the first application did."""
        note(subject=move.new_holder or move.previous_holder)
        try:
            async with self.logs.transaction() as log:
                return await self.apply_move(log, move)
        except IntegrityError:
            # Another process applied the same reference at the same moment: answer as a replay.
            async with self.logs.transaction() as log:
                return await self.apply_move(log, move)

    async def apply_move(self, log: LogWriter, move: DmgMove) -> TransferResult:
        """Apply one DMG move inside the caller's transaction (see :func:`ehealth.rules.plan_dmg_transfer`
        and :func:`ehealth.rules.plan_dmg_end`): the new holder gets a DMG relation from the start date, the
        others' end the day before; a move to no one ends the previous holder's. Every relation it changes
        enters the change log. A source reference already applied changes nothing (``replayed``)."""
        repo = RelationRepository(log.session)
        applied = await repo.applied_transfer(move.source_reference)
        if applied is not None:
            first = await repo.get(applied.new_relation_id) if applied.new_relation_id else None
            ended = await repo.get(applied.ended_relation_id) if applied.ended_relation_id else None
            return TransferResult(first, ended, replayed=True)
        rows = {r.relation_id: r for r in await repo.dmg_relations(move.patient_niss, Proof.DMG.value)}
        relations = [to_relation(r) for r in rows.values()]
        new_row: RelationRow | None = None
        changed: list[RelationRow] = []
        if move.new_holder:
            plan = plan_dmg_transfer(relations, move.new_holder, move.start, until=move.until)
            ends = plan.ends
            if plan.reuse_id is not None:
                new_row = rows[plan.reuse_id]
                if new_row.valid_to != plan.new_end:
                    new_row.valid_to = plan.new_end
                    changed.append(new_row)
            else:
                span = Period(move.start, plan.new_end)
                new_row = relation_row(move.new_holder, move.patient_niss, Proof.DMG, span, log.now)
                await repo.add(new_row)
                changed.append(new_row)
        else:
            ends = plan_dmg_end(relations, move.previous_holder, move.start)
        ended_rows = []
        for relation_id, end in sorted(ends.items()):
            rows[relation_id].valid_to = end
            ended_rows.append(rows[relation_id])
        # The relation reported as ended: the previous holder's when named, else the first one ended.
        ended_row = next(
            (r for r in ended_rows if r.provider_inami == move.previous_holder),
            None if move.previous_holder else next(iter(ended_rows), None),
        )
        await repo.record_transfer(
            DmgTransferRow(
                source_reference=move.source_reference,
                patient_niss=move.patient_niss,
                new_relation_id=new_row.relation_id if new_row is not None else None,
                ended_relation_id=ended_row.relation_id if ended_row else None,
                apply_time=log.now,
            )
        )
        for row in [*ended_rows, *changed]:
            await log.relation_changed(row.relation_id)
        return TransferResult(new_row, ended_row, replayed=False)

    # --- the change log ---------------------------------------------------------------------------------

    async def changes(self, after_sequence: int, limit: int) -> tuple[Sequence[RelationChange], int]:
        """The changes after ``after_sequence`` in sequence order (at most ``limit``), each with the relation
        as it is now, and the head of the log (read after them: never before the last one returned)."""
        async with self.db.connect() as conn:
            rows = (await conn.execute(RELATION_CHANGES, {"after": after_sequence, "limit": limit})).all()
            head = int((await conn.execute(RELATION_HEAD)).scalar_one())
        return rows, head

    async def _page(self, after_sequence: int, limit: int) -> Sequence[RelationChange]:
        return (await self.changes(after_sequence, limit))[0]

    def watch_changes(self, after_sequence: int, *, batch: int = 500) -> AsyncIterator[RelationChange]:
        """The changes after ``after_sequence``, then each new one as it is committed (woken by the log's
        feed, no polling); ends when the feed is closed (server stop) or the caller stops iterating."""
        return self.logs.relations.follow(after_sequence, self._page, lambda c: c.sequence, batch=batch)
