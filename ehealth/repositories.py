"""Repositories: one per aggregate, each owning its SQL. They take the session in their constructor; the
caller owns the transaction (nothing here commits)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    Integer,
    String,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter
from sqlmodel import col

from ehealth.models import (
    MEMBERSHIP,
    ORGANISATION,
    RELATION,
    RELATION_CHANGE,
    CadastreChangeRow,
    ChallengeRow,
    CredentialRow,
    DmgTransferRow,
    MandateRow,
    MandateServiceRow,
    MembershipRow,
    OrganisationRow,
    ProviderRow,
    RelationRow,
    RevocationRow,
    SessionRow,
    SigningKeyRow,
)
from ehealth.rules import PROOF_STRENGTH
from ehealth.tokens import KeyPair


def _valid_on(start: Any, end: Any, day: dt.date | BindParameter[dt.date]) -> ColumnElement[bool]:
    """SQL for "the period [start, end] (end NULL = open) contains ``day``"."""
    return and_(start <= day, or_(end.is_(None), end >= day))


def _after(columns: Sequence[Any], key: Sequence[object] | None) -> ColumnElement[bool] | None:
    """Keyset pagination: rows whose sort key is strictly after ``key``."""
    if key is None:
        return None
    if len(columns) == 1:
        result: ColumnElement[bool] = columns[0] > key[0]
        return result
    return tuple_(*columns) > tuple_(*key)


# --- the register's reads, built once (SQLAlchemy Core: compiled once, prepared once per connection) -------

_PROVIDER = bindparam("provider", type_=String)
_PATIENT = bindparam("patient", type_=String)
_DAY = bindparam("day", type_=Date)

RELATION_COLUMNS = (
    RELATION.c.relation_id,
    RELATION.c.provider_inami,
    RELATION.c.patient_niss,
    RELATION.c.proof,
    RELATION.c.valid_from,
    RELATION.c.valid_to,
)
_ORGANISATIONS_OF_PROVIDER = (
    select(MEMBERSHIP.c.organisation_inami)
    .join(ORGANISATION, ORGANISATION.c.inami == MEMBERSHIP.c.organisation_inami)
    .where(
        MEMBERSHIP.c.member_inami == _PROVIDER,
        _valid_on(MEMBERSHIP.c.valid_from, MEMBERSHIP.c.valid_to, _DAY),
        _valid_on(ORGANISATION.c.valid_from, ORGANISATION.c.valid_to, _DAY),
    )
)
_STRONGEST_FIRST = case(  # constants of the code, written into the statement
    *(
        (RELATION.c.proof == literal_column(f"'{p.value}'"), literal_column(str(-s)))
        for p, s in PROOF_STRENGTH.items()
    ),
    else_=literal_column("0"),
)
CHECK_RELATION = (
    select(*RELATION_COLUMNS)
    .where(
        RELATION.c.patient_niss == _PATIENT,
        or_(
            RELATION.c.provider_inami == _PROVIDER, RELATION.c.provider_inami.in_(_ORGANISATIONS_OF_PROVIDER)
        ),
        _valid_on(RELATION.c.valid_from, RELATION.c.valid_to, _DAY),
    )
    .order_by(
        _STRONGEST_FIRST,
        RELATION.c.provider_inami != _PROVIDER,  # its own before an organisation's
        RELATION.c.valid_from,
        RELATION.c.relation_id,
    )
    .limit(1)
)
"""CheckRelation in one statement: the patient's relations valid on ``:day`` held by ``:provider`` or by an
organisation (valid that day) it is a member of that day, the strongest first (the order of
:func:`ehealth.rules.strongest_relation`): strongest proof, its own, oldest start, id."""

RELATION_CHANGES = (
    select(RELATION_CHANGE.c.sequence, RELATION_CHANGE.c.change_time, *RELATION_COLUMNS)
    .join(RELATION, RELATION.c.relation_id == RELATION_CHANGE.c.relation_id)
    .where(RELATION_CHANGE.c.sequence > bindparam("after", type_=BigInteger))
    .order_by(RELATION_CHANGE.c.sequence)
    .limit(bindparam("limit", type_=Integer))
)
"""The register's changes after ``:after`` (at most ``:limit``), each with the relation as it is now."""

RELATION_HEAD = select(func.coalesce(func.max(RELATION_CHANGE.c.sequence), 0))
"""The last sequence number of the register's change log (0 when empty)."""


NEXT, CURRENT, RETIRED = "NEXT", "CURRENT", "RETIRED"
KEY_ORDER = {CURRENT: 0, NEXT: 1, RETIRED: 2}


class SigningKeyRepository:
    """Signing keys by state: one CURRENT (signs), one NEXT (published ahead), RETIRED ones (verify)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _in_state(self, state: str) -> SigningKeyRow | None:
        stmt = (
            select(SigningKeyRow)
            .where(col(SigningKeyRow.state) == state)
            .order_by(col(SigningKeyRow.create_time).desc())
        )
        return (await self.session.scalars(stmt)).first()

    async def current(self) -> SigningKeyRow | None:
        return await self._in_state(CURRENT)

    async def next(self) -> SigningKeyRow | None:
        return await self._in_state(NEXT)

    async def add(self, pair: KeyPair, now: dt.datetime, state: str = CURRENT) -> SigningKeyRow:
        row = SigningKeyRow(
            key_id=pair.key_id,
            private_key_pem=pair.private_key_pem,
            public_key_pem=pair.public_key_pem,
            create_time=now,
            state=state,
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def published(self, retired_after: dt.datetime) -> list[SigningKeyRow]:
        """The current key first, then the next one, then keys retired after ``retired_after``, most
        recently retired first."""
        stmt = select(SigningKeyRow).where(
            or_(
                col(SigningKeyRow.state).in_((CURRENT, NEXT)),
                col(SigningKeyRow.retire_time) > retired_after,
            )
        )
        rows = list((await self.session.scalars(stmt)).all())
        rows.sort(key=lambda r: (KEY_ORDER.get(r.state, 3), -(r.retire_time or r.create_time).timestamp()))
        return rows


class CredentialRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, kind: str, subject_id: str) -> CredentialRow | None:
        return await self.session.get(CredentialRow, (kind, subject_id))

    async def put(
        self, kind: str, subject_id: str, public_key_pem: str, fingerprint: str, now: dt.datetime
    ) -> bool:
        """Register (or replace) the key; False (nothing changed) when it is the very key that was revoked:
        a revoked key is never bound again, only a new one lifts the revocation (as a new eID would)."""
        row = await self.get(kind, subject_id)
        if row is not None and row.fingerprint == fingerprint and row.revoke_time is not None:
            return False
        if row is None:
            row = CredentialRow(subject_kind=kind, subject_id=subject_id, public_key_pem="", fingerprint="")
            self.session.add(row)
        row.public_key_pem, row.fingerprint, row.register_time = public_key_pem, fingerprint, now
        row.revoke_time = None
        await self.session.flush()
        return True


class ChallengeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: ChallengeRow) -> None:
        self.session.add(row)
        await self.session.flush()

    async def get(self, challenge_id: str) -> ChallengeRow | None:
        return await self.session.get(ChallengeRow, challenge_id)

    async def consume(self, challenge_id: str, now: dt.datetime) -> bool:
        """Mark the challenge used; False when it already was (atomic: one answer wins)."""
        stmt = (
            update(ChallengeRow)
            .where(col(ChallengeRow.challenge_id) == challenge_id, col(ChallengeRow.use_time).is_(None))
            .values(use_time=now)
            .execution_options(synchronize_session=False)
        )
        result: Any = await self.session.execute(stmt)
        return bool(result.rowcount == 1)

    async def purge(self, expired_before: dt.datetime) -> None:
        stmt = delete(ChallengeRow).where(col(ChallengeRow.expire_time) < expired_before)
        await self.session.execute(stmt)


class SessionRepository:
    """Sessions and their revocations."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: SessionRow) -> None:
        self.session.add(row)
        await self.session.flush()

    async def get(self, session_id: str) -> SessionRow | None:
        return await self.session.get(SessionRow, session_id)

    async def revocation(self, session_id: str) -> RevocationRow | None:
        stmt = select(RevocationRow).where(col(RevocationRow.session_id) == session_id)
        return (await self.session.scalars(stmt)).first()

    async def revocations_after(
        self, sequence: int, *, limit: int, unexpired_at: dt.datetime
    ) -> list[RevocationRow]:
        stmt = (
            select(RevocationRow)
            .where(col(RevocationRow.sequence) > sequence, col(RevocationRow.expire_time) > unexpired_at)
            .order_by(col(RevocationRow.sequence))
            .limit(limit)
        )
        return list((await self.session.scalars(stmt)).all())


class CadastreRepository:
    """Providers, organisations and memberships."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def provider(self, inami: str) -> ProviderRow | None:
        return await self.session.get(ProviderRow, inami)

    async def organisation(self, inami: str) -> OrganisationRow | None:
        return await self.session.get(OrganisationRow, inami)

    async def put_provider(self, values: ProviderRow) -> bool:
        """Create or replace; True when created."""
        existing = await self.provider(values.inami)
        if existing is None:
            self.session.add(values)
        else:
            for name in ("niss", "first_name", "last_name", "role", "valid_from", "valid_to"):
                setattr(existing, name, getattr(values, name))
            existing.supervisor_inami = values.supervisor_inami
        await self.session.flush()
        return existing is None

    async def put_organisation(self, values: OrganisationRow, members: Sequence[MembershipRow]) -> bool:
        """Create or replace the organisation and its whole membership; True when created."""
        existing = await self.organisation(values.inami)
        if existing is None:
            self.session.add(values)
        else:
            existing.kind, existing.name = values.kind, values.name
            existing.valid_from, existing.valid_to = values.valid_from, values.valid_to
        await self.session.flush()
        await self.session.execute(
            delete(MembershipRow).where(col(MembershipRow.organisation_inami) == values.inami)
        )
        self.session.add_all(members)
        await self.session.flush()
        return existing is None

    async def list_providers(self, role: str | None, after: str | None, limit: int) -> list[ProviderRow]:
        stmt = select(ProviderRow).order_by(col(ProviderRow.inami)).limit(limit)
        if role is not None:
            stmt = stmt.where(col(ProviderRow.role) == role)
        if after is not None:
            stmt = stmt.where(col(ProviderRow.inami) > after)
        return list((await self.session.scalars(stmt)).all())

    async def list_organisations(
        self, kind: str | None, after: str | None, limit: int
    ) -> list[OrganisationRow]:
        stmt = select(OrganisationRow).order_by(col(OrganisationRow.inami)).limit(limit)
        if kind is not None:
            stmt = stmt.where(col(OrganisationRow.kind) == kind)
        if after is not None:
            stmt = stmt.where(col(OrganisationRow.inami) > after)
        return list((await self.session.scalars(stmt)).all())

    async def members(self, organisation_inamis: Sequence[str]) -> dict[str, list[MembershipRow]]:
        """Members of each organisation, in member INAMI then start order."""
        out: dict[str, list[MembershipRow]] = {inami: [] for inami in organisation_inamis}
        if not organisation_inamis:
            return out
        stmt = (
            select(MembershipRow)
            .where(col(MembershipRow.organisation_inami).in_(organisation_inamis))
            .order_by(col(MembershipRow.member_inami), col(MembershipRow.valid_from))
        )
        for row in (await self.session.scalars(stmt)).all():
            out[row.organisation_inami].append(row)
        return out

    async def organisations_of(self, member_inami: str, day: dt.date) -> list[str]:
        """Organisations (valid on ``day``) that ``member_inami`` belongs to on ``day``, in INAMI order."""
        stmt = (
            select(col(OrganisationRow.inami))
            .join(MembershipRow, col(MembershipRow.organisation_inami) == col(OrganisationRow.inami))
            .where(
                col(MembershipRow.member_inami) == member_inami,
                _valid_on(col(MembershipRow.valid_from), col(MembershipRow.valid_to), day),
                _valid_on(col(OrganisationRow.valid_from), col(OrganisationRow.valid_to), day),
            )
            .distinct()
            .order_by(col(OrganisationRow.inami))
        )
        return list((await self.session.scalars(stmt)).all())


class CadastreChangeRepository:
    """The compacted change log of the cadastre (appended through :class:`ehealth.logs.LogWriter`)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def after(self, sequence: int, limit: int) -> list[CadastreChangeRow]:
        stmt = (
            select(CadastreChangeRow)
            .where(col(CadastreChangeRow.sequence) > sequence)
            .order_by(col(CadastreChangeRow.sequence))
            .limit(limit)
        )
        return list((await self.session.scalars(stmt)).all())

    async def head(self) -> int:
        """The last sequence number of the log (0 when empty)."""
        value = await self.session.scalar(select(func.max(col(CadastreChangeRow.sequence))))
        return int(value or 0)

    async def providers(self, inamis: Sequence[str]) -> dict[str, ProviderRow]:
        if not inamis:
            return {}
        stmt = select(ProviderRow).where(col(ProviderRow.inami).in_(inamis))
        return {r.inami: r for r in (await self.session.scalars(stmt)).all()}

    async def organisations(self, inamis: Sequence[str]) -> dict[str, OrganisationRow]:
        if not inamis:
            return {}
        stmt = select(OrganisationRow).where(col(OrganisationRow.inami).in_(inamis))
        return {r.inami: r for r in (await self.session.scalars(stmt)).all()}


class RelationRepository:
    """Therapeutic relations and the DMG moves already applied."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: RelationRow) -> RelationRow:
        self.session.add(row)
        await self.session.flush()
        return row

    async def get(self, relation_id: str) -> RelationRow | None:
        return await self.session.get(RelationRow, relation_id)

    async def of_pair(self, provider_inami: str, patient_niss: str, proof: str) -> list[RelationRow]:
        stmt = select(RelationRow).where(
            col(RelationRow.provider_inami) == provider_inami,
            col(RelationRow.patient_niss) == patient_niss,
            col(RelationRow.proof) == proof,
        )
        return list((await self.session.scalars(stmt)).all())

    async def search(
        self,
        *,
        provider_inami: str,
        patient_niss: str,
        valid_on: dt.date | None,
        after: Sequence[object] | None,
        limit: int,
    ) -> list[RelationRow]:
        """Relations in (start, id) order, filtered; ``after`` is the last (start ISO, id) seen."""
        order = (col(RelationRow.valid_from), col(RelationRow.relation_id))
        stmt = select(RelationRow).order_by(*order).limit(limit)
        if provider_inami:
            stmt = stmt.where(col(RelationRow.provider_inami) == provider_inami)
        if patient_niss:
            stmt = stmt.where(col(RelationRow.patient_niss) == patient_niss)
        if valid_on is not None:
            stmt = stmt.where(_valid_on(col(RelationRow.valid_from), col(RelationRow.valid_to), valid_on))
        condition = _after(order, after)
        if condition is not None:
            stmt = stmt.where(condition)
        return list((await self.session.scalars(stmt)).all())

    async def dmg_relations(self, patient_niss: str, proof: str) -> list[RelationRow]:
        stmt = select(RelationRow).where(
            col(RelationRow.patient_niss) == patient_niss, col(RelationRow.proof) == proof
        )
        return list((await self.session.scalars(stmt)).all())

    async def applied_transfer(self, source_reference: str) -> DmgTransferRow | None:
        return await self.session.get(DmgTransferRow, source_reference)

    async def record_transfer(self, row: DmgTransferRow) -> None:
        self.session.add(row)
        await self.session.flush()


class MandateRepository:
    """Mandates with their delegated services."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: MandateRow, services: Sequence[str]) -> None:
        self.session.add(row)
        await self.session.flush()
        self.session.add_all(MandateServiceRow(mandate_id=row.mandate_id, service=s) for s in services)
        await self.session.flush()

    async def get(self, mandate_id: str) -> MandateRow | None:
        return await self.session.get(MandateRow, mandate_id)

    async def services(self, mandate_ids: Sequence[str]) -> dict[str, list[str]]:
        """Services of each mandate, sorted."""
        out: dict[str, list[str]] = {m: [] for m in mandate_ids}
        if not mandate_ids:
            return out
        stmt = (
            select(MandateServiceRow)
            .where(col(MandateServiceRow.mandate_id).in_(mandate_ids))
            .order_by(col(MandateServiceRow.service))
        )
        for row in (await self.session.scalars(stmt)).all():
            out[row.mandate_id].append(row.service)
        return out

    async def of_principal(self, principal_inami: str) -> list[MandateRow]:
        stmt = (
            select(MandateRow)
            .where(col(MandateRow.principal_inami) == principal_inami)
            .order_by(col(MandateRow.valid_from), col(MandateRow.mandate_id))
            .with_for_update()
        )
        return list((await self.session.scalars(stmt)).all())

    async def running_from(self, subject: str, day: dt.date) -> list[MandateRow]:
        """Mandates given by or to ``subject`` that are valid on ``day`` or later (not cancelled), locked for
        update."""
        stmt = (
            select(MandateRow)
            .where(
                or_(col(MandateRow.principal_inami) == subject, col(MandateRow.mandatee_id) == subject),
                or_(
                    col(MandateRow.valid_to).is_(None),
                    and_(
                        col(MandateRow.valid_to) >= day,
                        col(MandateRow.valid_to) >= col(MandateRow.valid_from),
                    ),
                ),
            )
            .order_by(col(MandateRow.valid_from), col(MandateRow.mandate_id))
            .with_for_update()
        )
        return list((await self.session.scalars(stmt)).all())

    async def search(
        self,
        *,
        principal_inami: str = "",
        mandatee_id: str = "",
        mandatee_kind: str = "",
        valid_on: dt.date | None = None,
        after: Sequence[object] | None = None,
        limit: int = 100,
    ) -> list[MandateRow]:
        """Mandates in (start, id) order, filtered."""
        order = (col(MandateRow.valid_from), col(MandateRow.mandate_id))
        stmt = select(MandateRow).order_by(*order).limit(limit)
        if principal_inami:
            stmt = stmt.where(col(MandateRow.principal_inami) == principal_inami)
        if mandatee_id:
            stmt = stmt.where(col(MandateRow.mandatee_id) == mandatee_id)
        if mandatee_kind:
            stmt = stmt.where(col(MandateRow.mandatee_kind) == mandatee_kind)
        if valid_on is not None:
            stmt = stmt.where(_valid_on(col(MandateRow.valid_from), col(MandateRow.valid_to), valid_on))
        condition = _after(order, after)
        if condition is not None:
            stmt = stmt.where(condition)
        return list((await self.session.scalars(stmt)).all())
