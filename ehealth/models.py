"""eHealth tables (SQLModel), on a base of their own so that this metadata holds only eHealth's tables.

Instants are stored as naive UTC (:class:`UtcDateTime`) and come back timezone-aware, the same on SQLite and
PostgreSQL; civil dates are plain ``DATE`` columns. An unset end date means "open".
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from mycarenet_core.db import declarative_base

if TYPE_CHECKING:  # a variable is not a valid base class for mypy; at run time it is eHealth's own base
    Base = SQLModel
else:
    Base = declarative_base()


class UtcDateTime(TypeDecorator[dt.datetime]):
    """An aware UTC instant stored as a naive UTC ``TIMESTAMP`` (portable between SQLite and PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _instant(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UtcDateTime(), nullable=nullable))


# --- authentication ------------------------------------------------------------------------------------


class SigningKeyRow(Base, table=True):
    """A token signing key (Ed25519) in its life: NEXT (published, not signing yet), CURRENT (signing; one
    at a time), RETIRED (verifying the tokens it signed until they expire; has a retire time)."""

    __tablename__ = "signing_key"

    key_id: str = Field(primary_key=True, max_length=64)
    private_key_pem: str = Field(sa_column=Column(Text, nullable=False))
    public_key_pem: str = Field(sa_column=Column(Text, nullable=False))
    create_time: dt.datetime = _instant()
    retire_time: dt.datetime | None = _instant(nullable=True)
    state: str = Field(default="CURRENT", max_length=16, index=True)


class CredentialRow(Base, table=True):
    """The public key a subject authenticates with (replaced on re-registration, which also lifts a
    revocation: the administrator bound a new key to the person)."""

    __tablename__ = "credential"

    subject_kind: str = Field(primary_key=True, max_length=32)
    subject_id: str = Field(primary_key=True, max_length=32)
    public_key_pem: str = Field(sa_column=Column(Text, nullable=False))
    fingerprint: str = Field(max_length=64)
    register_time: dt.datetime = _instant()
    revoke_time: dt.datetime | None = _instant(nullable=True)


class ChallengeRow(Base, table=True):
    """A one-time challenge; ``use_time`` is set by the first answer, right or wrong."""

    __tablename__ = "challenge"

    challenge_id: str = Field(primary_key=True, max_length=64)
    subject_kind: str = Field(max_length=32)
    subject_id: str = Field(max_length=32)
    nonce: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    create_time: dt.datetime = _instant()
    expire_time: dt.datetime = _instant()
    use_time: dt.datetime | None = _instant(nullable=True)


class SessionRow(Base, table=True):
    """An issued session, with what it was opened with (credential, mandate), so that ending those ends it.

    Every action is traced to the session's subject. Sessions opened before the credential was recorded
    have no fingerprint."""

    __tablename__ = "session"
    __table_args__ = (Index("ix_session_subject", "subject_id", "subject_kind"),)

    session_id: str = Field(primary_key=True, max_length=64)
    subject_kind: str = Field(max_length=32)
    subject_id: str = Field(max_length=32)
    audience: str = Field(max_length=128)
    key_id: str = Field(max_length=64)
    principal_inami: str | None = Field(default=None, max_length=11, index=True)
    mandate_id: str | None = Field(default=None, max_length=64, index=True)
    credential_fingerprint: str | None = Field(default=None, max_length=64)
    issue_time: dt.datetime = _instant()
    expire_time: dt.datetime = _instant()
    user_inami: str | None = Field(default=None, max_length=11, index=True)
    """The pharmacist who opened a pharmacy's session (seed 003 §8.2.2.3)."""
    user_fingerprint: str | None = Field(default=None, max_length=64)
    """The key that pharmacist signed with."""


class RevocationRow(Base, table=True):
    """A revoked session, numbered in commit order."""

    __tablename__ = "revocation"

    sequence: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    )
    session_id: str = Field(max_length=64, unique=True)
    revoke_time: dt.datetime = _instant()
    expire_time: dt.datetime = _instant()


# --- cadastre ------------------------------------------------------------------------------------------


class CadastreChangeRow(Base, table=True):
    """The cadastre's change log, compacted: one row per provider or organisation, at the sequence of its
    latest change (a change deletes the entry's previous row and appends a new one). A follower that reads
    every row after its position therefore learns the current state of everything that changed since.

    On SQLite the table is AUTOINCREMENT so that a sequence number is never handed out twice."""

    __tablename__ = "cadastre_change"
    __table_args__ = (
        UniqueConstraint("kind", "inami", name="uq_cadastre_change_entry"),
        {"sqlite_autoincrement": True},
    )

    sequence: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    )
    change_time: dt.datetime = _instant()
    kind: str = Field(max_length=16)  # "provider" or "organisation"
    inami: str = Field(max_length=11)


class ProviderRow(Base, table=True):
    """A care provider of the cadastre."""

    __tablename__ = "provider"

    inami: str = Field(primary_key=True, max_length=11)
    niss: str = Field(max_length=11, index=True)
    first_name: str = Field(max_length=200)
    last_name: str = Field(max_length=200)
    role: str = Field(max_length=32, index=True)
    valid_from: dt.date
    valid_to: dt.date | None = None
    supervisor_inami: str | None = Field(default=None, max_length=11)


class OrganisationRow(Base, table=True):
    """A medical house or group practice."""

    __tablename__ = "organisation"

    inami: str = Field(primary_key=True, max_length=11)
    kind: str = Field(max_length=32, index=True)
    name: str = Field(max_length=200)
    valid_from: dt.date
    valid_to: dt.date | None = None


class MembershipRow(Base, table=True):
    """A provider's membership of an organisation over a period."""

    __tablename__ = "membership"
    __table_args__ = (Index("ix_membership_member", "member_inami", "organisation_inami"),)

    id: int | None = Field(default=None, primary_key=True)
    organisation_inami: str = Field(max_length=11, foreign_key="organisation.inami", index=True)
    member_inami: str = Field(max_length=11)
    valid_from: dt.date
    valid_to: dt.date | None = None


# --- therapeutic relations -----------------------------------------------------------------------------


class RelationRow(Base, table=True):
    """A therapeutic relation between a provider (or organisation) and a patient."""

    __tablename__ = "therapeutic_relation"
    __table_args__ = (Index("ix_relation_patient_provider", "patient_niss", "provider_inami"),)

    relation_id: str = Field(primary_key=True, max_length=64)
    provider_inami: str = Field(max_length=11, index=True)
    patient_niss: str = Field(max_length=11)
    proof: str = Field(max_length=64)
    valid_from: dt.date
    valid_to: dt.date | None = None
    create_time: dt.datetime = _instant()


class DmgTransferRow(Base, table=True):
    """A DMG relation move already applied (idempotency by source reference). A move to no one (the
    insurer's holding ended) has no new relation."""

    __tablename__ = "dmg_transfer"

    source_reference: str = Field(primary_key=True, max_length=200)
    patient_niss: str = Field(max_length=11)
    new_relation_id: str | None = Field(default=None, max_length=64)
    ended_relation_id: str | None = Field(default=None, max_length=64)
    apply_time: dt.datetime = _instant()


class RelationChangeRow(Base, table=True):
    """The register's change log, compacted: one row per relation, at the sequence of its latest change
    (register, revoke, DMG move, end; a change deletes the relation's previous row and appends a new one).
    A follower that reads every row after its position learns the current state of every relation that
    changed since; read joined with the relation itself.

    On SQLite the table is AUTOINCREMENT so that a sequence number is never handed out twice."""

    __tablename__ = "relation_change"
    __table_args__ = (
        UniqueConstraint("relation_id", name="uq_relation_change_relation"),
        {"sqlite_autoincrement": True},
    )

    sequence: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    )
    change_time: dt.datetime = _instant()
    relation_id: str = Field(max_length=64)


class HolderFeedPositionRow(Base, table=True):
    """How far eHealth has applied one insurer's holder-change feed (``HoldingFeedService``): advanced in
    the transaction that applies the moves, so that each change is applied exactly once."""

    __tablename__ = "holder_feed_position"

    insurer_code: str = Field(primary_key=True, max_length=3)
    applied_sequence: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))
    update_time: dt.datetime = _instant()


# --- mandates ------------------------------------------------------------------------------------------


class MandateRow(Base, table=True):
    """A mandate from a principal provider to a mandatee."""

    __tablename__ = "mandate"
    __table_args__ = (Index("ix_mandate_mandatee", "mandatee_id", "mandatee_kind"),)

    mandate_id: str = Field(primary_key=True, max_length=64)
    principal_inami: str = Field(max_length=11, index=True)
    mandatee_kind: str = Field(max_length=32)
    mandatee_id: str = Field(max_length=32)
    valid_from: dt.date
    valid_to: dt.date | None = None
    create_time: dt.datetime = _instant()


class MandateServiceRow(Base, table=True):
    """One service delegated by a mandate."""

    __tablename__ = "mandate_service"

    mandate_id: str = Field(primary_key=True, max_length=64, foreign_key="mandate.mandate_id")
    service: str = Field(primary_key=True, max_length=64)


# --- audit ---------------------------------------------------------------------------------------------


class AuditRow(Base, table=True):
    """Who did what at eHealth, on whose behalf, when, and how it ended (seed 001 art. 3): every login,
    every write, every refusal. ``time`` is eHealth's clock."""

    __tablename__ = "audit"

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    )
    time: dt.datetime = _instant()
    method: str = Field(max_length=80)
    certificate: str = Field(default="", max_length=64)
    executor_kind: str = Field(default="", max_length=32)
    executor_id: str = Field(default="", max_length=32)
    requester_inami: str = Field(default="", max_length=11, index=True)
    mandate_id: str = Field(default="", max_length=64)
    session_id: str = Field(default="", max_length=64)
    subject: str = Field(default="", max_length=64, index=True)
    outcome: str = Field(max_length=32)
    reason: str = Field(default="", max_length=80)


metadata = Base.metadata


# The tables as SQLAlchemy Core sees them, for the statements built once (the hot reads, bulk writes).
def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


RELATION = _table(RelationRow)
RELATION_CHANGE = _table(RelationChangeRow)
MEMBERSHIP = _table(MembershipRow)
ORGANISATION = _table(OrganisationRow)
REVOCATION = _table(RevocationRow)
AUDIT = _table(AuditRow)
HOLDER_FEED_POSITION = _table(HolderFeedPositionRow)
