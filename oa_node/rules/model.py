"""The patient's DMG file as the insurer (OA) stores it: plain frozen dataclasses, one per future DB row.

Everything here is data: no behaviour beyond tiny derived properties, no I/O, no clock. The engine
(:mod:`oa_node.rules.engine`) takes a :class:`DmgFile` and returns a new one inside a
:class:`Decision`, together with the effects the persistence layer must carry out (messages to post
in the holders' mailboxes, payments to make or to recover).

Vocabulary (seed 000):

* a *holding* is one period during which a physician or medical house is the DMG holder
  ("détenteur du DMG"); ``right_end`` is the end of the right as granted (31 Dec of year + 2,
  seed 002 "jusqu'à la fin de la deuxième année civile"), ``end`` the effective end once a later
  holder took over (closure the day before, seed 000 §3.3.5);
* a *payment* is the one DMG fee of a calendar year (seed 000 §3.1.2 "un seul paiement pour un DMG
  par patient et par année") with the contact it corresponds to, used to settle cohabitation
  conflicts (seed 000 §5.1 "première consultation en date de l'année").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum


class Procedure(StrEnum):
    """How a holding was obtained: eDMG notification or paper code 102771 (seed 000 §1.1, §3)."""

    ELECTRONIC = "ELECTRONIC"
    PAPER = "PAPER"


class HoldingStatus(StrEnum):
    """ACTIVE: in force until ``end``; CLOSED: a later holder took over; CANCELLED: void (§5.2.2.2.2)."""

    ACTIVE = "ACTIVE"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"


class StatusReason(StrEnum):
    """Why a holding is not (or no longer fully) active."""

    TAKEOVER = "TAKEOVER"
    """Closed the day before a new holder's start (seed 000 §3.3.5)."""
    PAYMENT_RECOVERED = "PAYMENT_RECOVERED"
    """A paper holding whose fee was recovered: the paper right follows the payment (seed 000 §5.2.2.2.2)."""


class PaymentKind(StrEnum):
    """The four ways a DMG fee is paid (seed 000 §1.1, §3.1.2, §3.3.6; seed 002)."""

    NOTIFICATION = "NOTIFICATION"
    ACCELERATED_PROLONGATION = "ACCELERATED_PROLONGATION"
    PAPER_ATTESTATION = "PAPER_ATTESTATION"
    ADMINISTRATIVE_PROLONGATION = "ADMINISTRATIVE_PROLONGATION"


class TariffCategory(StrEnum):
    """Fee category (seed 002: 55 EUR since 2016 for patients aged 45-74 with the chronic status)."""

    STANDARD = "STANDARD"
    CHRONIC_45_74 = "CHRONIC_45_74"


class Payee(StrEnum):
    """Who receives a DMG fee (seed 000 §1.1.1): the physician (eDMG, or a 102771 in third-party payment), or
    the patient, reimbursed for a 102771 paid in cash to the GP and handed in to the insurer."""

    PROVIDER = "PROVIDER"
    PATIENT = "PATIENT"


class PaymentIndicator(StrEnum):
    """The notify answer's indicator (seed 000 §3.3.2: 'avec' / 'sans' paiement)."""

    WITH_PAYMENT = "WITH_PAYMENT"
    WITHOUT_PAYMENT = "WITHOUT_PAYMENT"


class AttestationOutcome(StrEnum):
    """What the OA did with a submitted 102771 (seed 000 §5.2.2.1: 'Pas de remboursement patient')."""

    ACCEPTED = "ACCEPTED"
    REFUSED = "REFUSED"


class RefusalReason(StrEnum):
    """Why a 102771 attestation was refused (refusal is an outcome, not a rejection: it is recorded)."""

    DMG_ALREADY_PAID = "DMG_ALREADY_PAID"
    """Another DMG fee of the year corresponds to an earlier (or the same) first contact (seed 000 §5.1)."""
    NOT_AN_ACCREDITED_GP = "NOT_AN_ACCREDITED_GP"
    """A 102771 is attested by an accredited GP only (seed 002): not a specialist, a dentist, a trainee."""
    PROVIDER_ENROLLED = "PROVIDER_ENROLLED"
    """A GP enrolled on the attestation date committed to the electronic procedure only (seed 000 §3.1.1)."""
    MEDICAL_HOUSE_CONTRACT = "MEDICAL_HOUSE_CONTRACT"
    """The patient is under a medical-house contract at the attestation date (SPEC §3.5 code 162)."""
    SAME_DAY_HOLDER = "SAME_DAY_HOLDER"
    """Another holder's right starts on the attestation date: no right can be inserted before it."""


@dataclass(frozen=True, slots=True)
class Holding:
    """One period during which ``holder`` (a GP's INAMI number or a medical house's number) holds the DMG."""

    seq: int
    holder: str
    start: date
    end: date
    right_end: date
    procedure: Procedure
    status: HoldingStatus = HoldingStatus.ACTIVE
    status_reason: StatusReason | None = None
    status_date: date | None = None
    reopened: bool = False
    trainee: str | None = None
    """The GP in training who notified on behalf of ``holder`` (his supervisor, SPEC §9)."""
    payment_reference: str | None = None
    """For a PAPER holding: the fee that carries the right (seed 000 §5.2.2 'droit selon le paiement')."""

    @property
    def live(self) -> bool:
        """Not cancelled: part of the patient's timeline of holders."""
        return self.status is not HoldingStatus.CANCELLED

    def covers(self, day: date) -> bool:
        """Whether this (live) holding is in force on ``day``."""
        return self.live and self.start <= day <= self.end


@dataclass(frozen=True, slots=True)
class Payment:
    """One DMG fee for ``year``; registered on ``registered_on`` and due within 30 days (seed 002)."""

    reference: str
    patient: str
    year: int
    beneficiary: str
    kind: PaymentKind
    amount: Decimal
    category: TariffCategory
    registered_on: date
    due_by: date
    contact_date: date
    """The contact this fee corresponds to: the one compared in a cohabitation conflict (seed 000 §5.1)."""
    recovered: bool = False
    recovered_on: date | None = None
    recovered_for: str | None = None
    """Reference of the payment that won the year when this one was recovered."""
    payee: Payee = Payee.PROVIDER
    """Who is paid: ``beneficiary`` (the holder whose DMG the fee is), or the patient (seed 000 §1.1.1)."""
    paid_on: date | None = None
    """The insurer's payment run that pays it (at most ``due_by``); None for a fee recorded before runs."""

    def paid_by(self, today: date) -> date | None:
        """The day it was paid, if it was by ``today``: its payment run has passed and it was not recovered
        before (a fee recovered before its run is never paid)."""
        run = self.paid_on or self.due_by
        if run > today or (self.recovered and self.recovered_on is not None and self.recovered_on < run):
            return None
        return run


@dataclass(frozen=True, slots=True)
class Contact:
    """A consultation or visit received through invoicing (it counts once submitted, seed 002)."""

    provider: str
    contact_date: date
    code: str
    submitted_on: date


@dataclass(frozen=True, slots=True)
class PaperAttestation:
    """A care certificate carrying code 102771, handed by the patient to the OA (seed 000 §1.1.1)."""

    provider: str
    attestation_date: date
    submitted_on: date
    outcome: AttestationOutcome
    refusal_reason: RefusalReason | None = None
    payment_reference: str | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """An accepted eDMG notification (seed 000 §3.3.1) with the answer that was given (§3.3.2)."""

    requester_reference: str
    provider: str
    holder: str
    contact_date: date
    code: str
    processed_on: date
    start: date
    end: date
    indicator: PaymentIndicator
    supervisor: str | None = None


@dataclass(frozen=True, slots=True)
class DmgFile:
    """Everything the OA keeps about one patient's DMG (the SAV DMG rows of that patient)."""

    patient: str
    holdings: tuple[Holding, ...] = ()
    payments: tuple[Payment, ...] = ()
    contacts: tuple[Contact, ...] = ()
    attestations: tuple[PaperAttestation, ...] = ()
    notifications: tuple[Notification, ...] = ()

    def live_holdings(self) -> tuple[Holding, ...]:
        """The non-cancelled holdings, in timeline order."""
        return tuple(sorted((h for h in self.holdings if h.live), key=lambda h: (h.start, h.seq)))

    def holding_at(self, day: date) -> Holding | None:
        """The holding in force on ``day``, if any."""
        return next((h for h in self.live_holdings() if h.covers(day)), None)

    def paid_for(self, year: int) -> Payment | None:
        """The (at most one) unrecovered fee of ``year``."""
        return next((p for p in self.payments if p.year == year and not p.recovered), None)


@dataclass(frozen=True, slots=True)
class NotifyAnswer:
    """The synchronous answer to a notification (seed 000 §3.3.2)."""

    patient: str
    requester: str
    holder: str
    start: date
    end: date
    indicator: PaymentIndicator
    requester_reference: str


@dataclass(frozen=True, slots=True)
class ClosureMessage:
    """GMD-CLOSURE, posted to the previous holder if enrolled (seed 000 §3.3.5)."""

    patient: str
    previous_holder: str
    previous_end: date
    new_holder: str
    new_start: date

    @property
    def recipient(self) -> str:
        """The mailbox the message goes to."""
        return self.previous_holder


@dataclass(frozen=True, slots=True)
class ExtensionMessage:
    """GMD-EXTENSION, posted to the holder if enrolled (seed 000 §3.3.6.2)."""

    patient: str
    holder: str
    prolonged_on: date
    """The date of the prolongation (the registration date of the contact, or the year-end run)."""
    right_end: date
    contact_date: date
    contact_code: str
    contact_provider: str

    @property
    def recipient(self) -> str:
        """The mailbox the message goes to."""
        return self.holder


Message = ClosureMessage | ExtensionMessage


@dataclass(frozen=True, slots=True)
class HolderMove:
    """Who holds the patient's DMG changed from ``start`` on: ``holder`` (None: nobody) instead of
    ``previous`` (None: nobody held it then), until ``end`` (the last day of the holding: the DMG relation
    ends with it). A takeover or an opening (notification, 102771), a holding cancelled with its payment
    (its predecessor, if any, holds it again), or a holding whose end moved (a prolongation: ``holder`` and
    ``previous`` are the same)."""

    patient: str
    holder: str | None
    previous: str | None
    start: date
    end: date | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The new file and the effects of one accepted call (a rejected call raises instead)."""

    file: DmgFile
    answer: NotifyAnswer | None = None
    attestation: PaperAttestation | None = None
    messages: tuple[Message, ...] = ()
    payments_created: tuple[Payment, ...] = ()
    payments_recovered: tuple[Payment, ...] = ()
    holdings_opened: tuple[Holding, ...] = ()
    holdings_extended: tuple[Holding, ...] = ()
    holdings_closed: tuple[Holding, ...] = ()
    holdings_cancelled: tuple[Holding, ...] = ()
    holdings_reopened: tuple[Holding, ...] = ()
    holder_moves: tuple[HolderMove, ...] = ()
    """The changes of who holds the DMG that this decision makes (the holder-change feed)."""
    replayed: bool = False
    """True when a notification was a replay of an earlier one (same provider + requester reference)."""
