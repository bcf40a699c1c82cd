"""The tables of one insurer node (its SAV DMG database), on a SQLModel base of its own.

Groups of tables:

* members: :class:`Member` (one row per NISS, also the per-patient lock row: ``file_version``),
  :class:`Affiliation`, and the affiliation feed (:class:`AffiliationChangeRow`, :class:`FeedHead`);
* reference data: :class:`KnownProvider`, :class:`Organisation`, :class:`OrganisationMember`,
  :class:`TariffLine`, and :class:`Enrolment`; how far the node has followed eHealth's cadastre
  (:class:`CadastrePosition`); the year ends run (:class:`ClockOrigin`, :class:`YearEndRun`);
* the DMG file of each patient, one table per kind of row of :class:`oa_node.rules.DmgFile`:
  :class:`HoldingRow`, :class:`PaymentRow`, :class:`ContactRow`, :class:`AttestationRow`,
  :class:`NotificationRow`;
* the holder-change log of :class:`HolderChangeRow` (written in the transaction of every change of a
  patient's DMG holder, followed by eHealth through ``HoldingFeedService``);
* idempotency (:class:`RequestRecord`), the :class:`OutboxMessage` table and the :class:`AuditRecord`.

Dates are ``DATE`` columns, amounts exact decimal strings, enums their string values.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, cast

from sqlalchemy import Column, DateTime, Index, LargeBinary, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

from mycarenet_core.db import declarative_base

if TYPE_CHECKING:  # mypy cannot use a base class made at run time
    Base = SQLModel
else:
    Base = declarative_base()
metadata = Base.metadata


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a model (for statements built once, without the ORM)."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


def _utc() -> Column[dt.datetime]:
    return Column(DateTime(timezone=True), nullable=False)


# --- members and the affiliation feed ------------------------------------------------------------------


class Member(Base, table=True):
    """A person known to this insurer. ``file_version`` is bumped by every change of their DMG file:
    the UPDATE that bumps it is the per-patient lock (row lock on PostgreSQL, write lock on SQLite)."""

    __tablename__ = "oa_member"

    niss: str = Field(primary_key=True, max_length=11)
    mutuality_code: str = Field(max_length=3)
    registration_number: str = Field(index=True, unique=True, max_length=13)
    first_name: str = ""
    last_name: str = ""
    birth_date: dt.date | None = None
    sex: int = 0
    death_date: dt.date | None = None
    chronic_condition: bool = False
    medical_house_inami: str | None = None
    medical_house_start: dt.date | None = None
    medical_house_end: dt.date | None = None
    file_version: int = 0


class Affiliation(Base, table=True):
    """One affiliation period of a member with this insurer (end None = still affiliated)."""

    __tablename__ = "oa_affiliation"

    id: int | None = Field(default=None, primary_key=True)
    niss: str = Field(foreign_key="oa_member.niss", index=True)
    start: dt.date
    end: dt.date | None = None


class InsurabilityRow(Base, table=True):
    """One insurability period of a member and its status (seed 003 §3.4.1, §5.2). A member without any
    has the default of :func:`oa_node.rules.insurability.default_periods` (110/110 on its affiliations)."""

    __tablename__ = "oa_insurability"

    id: int | None = Field(default=None, primary_key=True)
    niss: str = Field(foreign_key="oa_member.niss", index=True)
    start: dt.date
    end: dt.date
    ct1: str = Field(max_length=3)
    ct2: str = Field(max_length=3)
    preferential_rate: bool = False
    maximum_billing: bool = False


class CareStatusRow(Base, table=True):
    """A care status of a member by period: CHRONIC_CONDITION, PALLIATIVE, HOSPITALISED (end None: holds)."""

    __tablename__ = "oa_care_status"

    id: int | None = Field(default=None, primary_key=True)
    niss: str = Field(foreign_key="oa_member.niss", index=True)
    kind: str = Field(max_length=20)
    start: dt.date
    end: dt.date | None = None


class AgreementKey(Base, table=True):
    """This insurer's secret for its agreement numbers (seed 003 §5.4): made at random when the database is
    created, never sent anywhere (the trusted third party asks VerifyAgreement)."""

    __tablename__ = "oa_agreement_key"

    id: int = Field(default=1, primary_key=True)
    secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class RejectedTarificationRow(Base, table=True):
    """A pharmacy's tarification line this insurer rejected (ValidateTarification, seed 003 §5.1): what lets
    the provider's tarification office consult that patient's insurability for that dispensing date (seed
    003 §8.2.2.7). One row per line, whatever the number of times it is validated."""

    __tablename__ = "oa_rejected_tarification"

    provider_inami: str = Field(primary_key=True, max_length=11)
    niss: str = Field(primary_key=True, max_length=11)
    dispensing_date: dt.date = Field(primary_key=True)
    line_id: str = Field(primary_key=True, max_length=64)
    reason: str = Field(max_length=32)
    rejected_at: dt.datetime = Field(sa_column=_utc())


AFFILIATION_FEED = 1
HOLDER_FEED = 2


class FeedHead(Base, table=True):
    """One row per feed (:data:`AFFILIATION_FEED`, :data:`HOLDER_FEED`) that allocates its sequence
    numbers: updating it serialises that feed's writers, so that sequence order is commit order and a
    reader never skips a change committed late."""

    __tablename__ = "oa_feed_head"

    id: int = Field(default=1, primary_key=True)
    last_sequence: int = 0


class AffiliationChangeRow(Base, table=True):
    """One entry of the affiliation feed: every period of a NISS after a change (JSON list)."""

    __tablename__ = "oa_affiliation_change"

    sequence: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    niss: str = Field(index=True)
    registration_number: str = ""
    periods_json: str = "[]"
    created_at: dt.datetime = Field(sa_column=_utc())


# --- reference data ------------------------------------------------------------------------------------


class KnownProvider(Base, table=True):
    """A provider known to this insurer (from the cadastre); GPs in training carry their supervisor.
    ``valid_from``/``valid_until``: the period the cadastre lets the provider practise (None = open)."""

    __tablename__ = "oa_provider"

    inami: str = Field(primary_key=True, max_length=11)
    role: int = 0
    first_name: str = ""
    last_name: str = ""
    supervisor_inami: str | None = None
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None


class Organisation(Base, table=True):
    """A group practice or a medical house."""

    __tablename__ = "oa_organisation"

    inami: str = Field(primary_key=True, max_length=11)
    role: int = 0
    name: str = ""
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None


class OrganisationMember(Base, table=True):
    """A GP's membership of an organisation during a period."""

    __tablename__ = "oa_organisation_member"

    id: int | None = Field(default=None, primary_key=True)
    organisation_inami: str = Field(foreign_key="oa_organisation.inami", index=True)
    member_inami: str = Field(index=True)
    start: dt.date
    end: dt.date | None = None


class CadastrePosition(Base, table=True):
    """The single row saying how far this node has applied eHealth's cadastre change log. It is updated in
    the transaction that applies the changes (so each change is applied exactly once), and that UPDATE,
    made first, serialises appliers."""

    __tablename__ = "oa_cadastre_position"

    id: int = Field(default=1, primary_key=True)
    applied_sequence: int = 0
    applied_at: dt.datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class ClockOrigin(Base, table=True):
    """The single row saying the first mesh date this node lived (its first start): year ends are run for
    the years it lived through from there, never for earlier ones (the sandbox's test clock)."""

    __tablename__ = "oa_clock_origin"

    id: int = Field(default=1, primary_key=True)
    first_day: dt.date


class YearEndRun(Base, table=True):
    """A year end this node ran (once per year: the row is the proof), when the mesh clock went over
    31 December, by a move of the test clock or by time running."""

    __tablename__ = "oa_year_end_run"

    year: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    processing_date: dt.date
    run_at: dt.datetime = Field(sa_column=_utc())
    patients_affected: int = 0
    payments_created: int = 0
    payments_recovered: int = 0


class TariffLine(Base, table=True):
    """The DMG fee of a year and a patient category."""

    __tablename__ = "oa_tariff"

    year: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    category: str = Field(primary_key=True)
    amount: str
    source: str = Field(default="illustrative", sa_column_kwargs={"server_default": "illustrative"})
    """Where the amount comes from: "seed 002", or "illustrative" (not an official INAMI fee)."""
    payable_from: dt.date | None = None
    """The fee is not paid before this day (seed 002: the 55 EUR of 2016 from 1 July)."""


class Enrolment(Base, table=True):
    """A GP's (or medical house's) enrolment for the electronic DMG at this insurer (never removed)."""

    __tablename__ = "oa_enrolment"

    inami: str = Field(primary_key=True, max_length=11)
    enrolled_since: dt.date
    iban: str
    bic: str = ""
    holder_name: str = ""
    requested_at: dt.datetime = Field(sa_column=_utc())


# --- the DMG file of a patient -------------------------------------------------------------------------


class HoldingRow(Base, table=True):
    """:class:`oa_node.rules.Holding` of a patient."""

    __tablename__ = "oa_holding"
    __table_args__ = (UniqueConstraint("niss", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    niss: str = Field(index=True)
    seq: int
    holder: str = Field(index=True)
    start: dt.date
    end: dt.date
    right_end: dt.date
    procedure: str
    status: str
    status_reason: str | None = None
    status_date: dt.date | None = None
    reopened: bool = False
    trainee: str | None = None
    payment_reference: str | None = None


class PaymentRow(Base, table=True):
    """:class:`oa_node.rules.Payment` (one fee; ``patient`` is the NISS)."""

    __tablename__ = "oa_payment"

    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(unique=True)
    patient: str = Field(index=True)
    year: int
    beneficiary: str = Field(index=True)
    kind: str
    amount: str
    category: str
    registered_on: dt.date
    due_by: dt.date
    contact_date: dt.date
    recovered: bool = False
    recovered_on: dt.date | None = None
    recovered_for: str | None = None
    payee: str = Field(default="PROVIDER", sa_column_kwargs={"server_default": "PROVIDER"})
    paid_on: dt.date | None = None


class ContactRow(Base, table=True):
    """:class:`oa_node.rules.Contact` received through invoicing."""

    __tablename__ = "oa_contact"

    id: int | None = Field(default=None, primary_key=True)
    niss: str = Field(index=True)
    provider: str
    contact_date: dt.date
    code: str
    submitted_on: dt.date


class AttestationRow(Base, table=True):
    """:class:`oa_node.rules.PaperAttestation` (102771) and what the insurer did with it."""

    __tablename__ = "oa_attestation"

    id: int | None = Field(default=None, primary_key=True)
    niss: str = Field(index=True)
    provider: str
    attestation_date: dt.date
    submitted_on: dt.date
    outcome: str
    refusal_reason: str | None = None
    payment_reference: str | None = None


class NotificationRow(Base, table=True):
    """:class:`oa_node.rules.Notification` accepted for a patient."""

    __tablename__ = "oa_notification"

    id: int | None = Field(default=None, primary_key=True)
    niss: str = Field(index=True)
    requester_reference: str
    provider: str
    holder: str
    contact_date: dt.date
    code: str
    processed_on: dt.date
    start: dt.date
    end: dt.date
    indicator: str
    supervisor: str | None = None


class HolderChangeRow(Base, table=True):
    """One change of who holds a patient's DMG from ``start_date`` on (``holder_inami`` empty: nobody),
    in the transaction of the holding change itself. ``sequence`` comes from the :data:`HOLDER_FEED` head
    row; ``source_reference`` ("<insurer>:<what caused it>") is the idempotency key eHealth applies it by."""

    __tablename__ = "oa_holder_change"

    sequence: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    change_time: dt.datetime = Field(sa_column=_utc())
    patient_niss: str = Field(index=True, max_length=11)
    holder_inami: str = Field(default="", max_length=11)
    previous_holder_inami: str = Field(default="", max_length=11)
    start_date: dt.date
    source_reference: str = Field(unique=True, max_length=100)
    traceparent: str = Field(default="", max_length=64)
    end_date: dt.date | None = None
    """Last day of the new holder's holding (the DMG relation ends then); None: open, or nobody holds it."""


# --- idempotency, outbox, audit --------------------------------------------------------------------------


class RequestRecord(Base, table=True):
    """The first answer to an idempotent request (notify by requester reference, intake by intake
    reference): a replay with the same fingerprint gets ``response`` back; another content gets 158."""

    __tablename__ = "oa_request_record"
    __table_args__ = (UniqueConstraint("kind", "requester", "reference"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    requester: str
    reference: str
    fingerprint: str
    response: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: dt.datetime = Field(sa_column=_utc())


class OutboxMessage(Base, table=True):
    """A mailbox message waiting for (or done with) delivery to the hub; written in the transaction of
    the change that caused it. ``id`` orders delivery; ``message_id`` is the stable id the hub dedups."""

    __tablename__ = "oa_outbox"

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(unique=True)
    recipient_inami: str = Field(index=True)
    kind: int
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: dt.datetime = Field(sa_column=_utc())
    delivered: bool = Field(default=False, index=True)
    delivered_at: dt.datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    attempts: int = 0
    # Set aside (a dead letter): the message cannot be delivered because of itself (too big, or refused by
    # the hub for good); it is no longer sent, and the messages behind it go on. ``error`` says why.
    dead_at: dt.datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    error: str = Field(default="", max_length=500)


class AuditRecord(Base, table=True):
    """One request (seed 001 art. 3): who is responsible, who executed it, when, and how it ended."""

    __tablename__ = "oa_audit"
    # The purpose check reads the consultations answered in a period (oa_node/purpose.py).
    __table_args__ = (Index("ix_oa_audit_rpc_at", "rpc", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = Field(sa_column=_utc())
    rpc: str
    requester_inami: str = ""
    requester_role: int = 0
    executor_id: str = ""
    executor_kind: str = ""
    mandate_id: str = ""
    session_id: str = ""
    organisation_inami: str = ""
    requester_reference: str = ""
    patient_niss: str = ""
    peer: str = ""
    outcome: str = "OK"
    status_code: str = "OK"
    mycarenet_codes: str = ""
    incidents: str = ""
    duration_ms: int = 0


# --- invoicing from the provider's side (eFact) ----------------------------------------------------------


class InvoiceLineRow(Base, table=True):
    """One eFact line acknowledged to the hub (stored before the acknowledgement: nothing acknowledged is
    lost), processed afterwards by :class:`oa_node.invoicing.InvoiceLines`; ``answered`` once its answer is
    in the outbox. One row per (requester, batch reference, line number): a batch posted again adds none."""

    __tablename__ = "oa_invoice_line"
    __table_args__ = (UniqueConstraint("requester_inami", "batch_reference", "line_number"),)

    id: int | None = Field(default=None, primary_key=True)
    requester_inami: str
    batch_reference: str
    line_number: int
    hub_reference: str
    patient_niss: str
    provider_inami: str
    contact_date: dt.date
    code: str
    amount: str
    submitted_on: dt.date
    fingerprint: str
    received_at: dt.datetime = Field(sa_column=_utc())
    answered: bool = Field(default=False, index=True)
    answered_at: dt.datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class PurposeCheckRow(Base, table=True):
    """One period of the a-posteriori purpose check done (seed 003 §7.3; :mod:`oa_node.purpose`): written
    in the transaction of its findings' outbox messages, so a period is checked once."""

    __tablename__ = "oa_purpose_check"

    period_start: dt.date = Field(primary_key=True)
    period_end: dt.date
    checked_at: dt.datetime = Field(sa_column=_utc())
    consultations: int = 0
    findings: int = 0
