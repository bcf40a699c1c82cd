"""Pure rules of the insurability consultation and the pharmacist's payment commitment (seed 003 §5, §11.1).

No I/O, no clock: every entry point takes the patient's insurability periods as the insurer keeps them and
the dates it needs as parameters.

* :func:`payment_commitment`: the coverage an insurer commits to pay for a dispensing date (§5.2): from the
  dispensing date to the end of the insurability period holding it, joined with the adjacent periods of the
  same status, capped at the dispensing date + 30 days; none without a right on the dispensing date.
* :func:`reusable_until`: the last dispensing date for which the commitment may be reused while the network
  is unavailable (§5.3, §11.1), or ``None`` when it can never be reused (its coverage ended before the day it
  was obtained).
* :func:`agreement_number` / :func:`agreement_is_genuine`: the proof of the consultation (§5.4): a keyed MAC
  of the fields that fix the commitment, with the insurer's own secret; the trusted third party (INAMI's role
  in §5.4.2) checks a number against given fields without learning the key.
* :func:`validate_line`: a pharmacy's tarification line checked by the insurer (§5.1): the basic principle,
  then the proof.

Where the seed is silent (*decision*):

1. "Même statut social" (§11.1 example 6) is read as the same :attr:`InsurabilityPeriod.status`: the CT1/CT2
   codes and the two social statuses that change what the pharmacist bills (preferential reimbursement,
   maximum billing). Two adjacent periods that differ in any of them are not joined: the data "relatives à ce
   droit" are not constant (§5.2).
2. "Adjacent" means the next period starts the day after the previous one ends; a gap of a day breaks the
   coverage there (the insurers "ne garantissent pas les périodes où le droit n'est pas établi").
3. The agreement number covers the insurer, the patient, the provider the commitment is linked to ("lié au
   prestataire", §5.1), the dispensing date, the coverage and the status: changing any of them makes it not
   genuine. Its form, ``<insurer>-<20 characters of base32>`` (100 bits of HMAC-SHA256), is ours: the real
   algorithms are each insurer's secret.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

COVERAGE_DAYS = 30
"""The coverage's maximum length after the dispensing date (seed 003 §5.2: decided by the pharmacists'
and insurers' agreement commission, which may revise it)."""

AGREEMENT_VERSION = "v1"
AGREEMENT_CHARACTERS = 20


@dataclass(frozen=True)
class InsurabilityStatus:
    """What a pharmacist bills with: the beneficiary codes and the social statuses (seed 003 §3.4.1)."""

    ct1: str
    ct2: str
    preferential_rate: bool = False
    maximum_billing: bool = False


@dataclass(frozen=True)
class StatusSpan:
    """Days (both ends included) with one insurability status."""

    start: dt.date
    end: dt.date
    status: InsurabilityStatus

    def holds(self, day: dt.date) -> bool:
        return self.start <= day <= self.end


class InsurabilityPeriod(StatusSpan):
    """One period during which the patient's insurability data stay the same."""


class Coverage(StatusSpan):
    """A payment commitment's coverage and the status it commits on."""


def period_at(periods: Iterable[InsurabilityPeriod], day: dt.date) -> InsurabilityPeriod | None:
    """The insurability period holding ``day``, if the patient has a right that day."""
    return next((period for period in periods if period.holds(day)), None)


GENERAL_REGIME = InsurabilityStatus("110", "110")
"""CT1/CT2 of the general regime without preferential rate."""


def default_periods(
    affiliations: Iterable[tuple[dt.date, dt.date | None]], on: dt.date
) -> list[InsurabilityPeriod]:
    """*decision* (the sandbox's default): a member whose insurer recorded no insurability has the general
    regime, 110/110, over each affiliation period; an open affiliation is established to 31 December of the
    year after ``on`` (insurers establish rights up to a date, never open-ended)."""
    horizon = dt.date(on.year + 1, 12, 31)
    return [
        InsurabilityPeriod(start, end if end is not None else max(horizon, start), GENERAL_REGIME)
        for start, end in sorted(affiliations)
    ]


def around(periods: Iterable[InsurabilityPeriod], day: dt.date) -> list[InsurabilityPeriod]:
    """The periods a MemberData answer shows for ``day``: the one holding it with the ones just before and
    just after it (without one holding it: the last before and the first after), oldest first."""
    ordered = sorted(periods, key=lambda period: period.start)
    before = [period for period in ordered if period.end < day]
    holding = [period for period in ordered if period.holds(day)]
    after = [period for period in ordered if period.start > day]
    return before[-1:] + holding[:1] + after[:1]


def payment_commitment(
    periods: Sequence[InsurabilityPeriod], dispensing: dt.date, *, cap_days: int = COVERAGE_DAYS
) -> Coverage | None:
    """The coverage committed for ``dispensing`` (seed 003 §5.2), or ``None`` without a right that day."""
    current = period_at(periods, dispensing)
    if current is None:
        return None
    cap = dispensing + dt.timedelta(days=cap_days)
    end = current.end
    by_start = {period.start: period for period in periods}
    while end < cap:
        following = by_start.get(end + dt.timedelta(days=1))
        if following is None or following.status != current.status:
            break
        end = following.end
    return Coverage(start=dispensing, end=min(end, cap), status=current.status)


def reusable_until(coverage: Coverage, consulted: dt.date) -> dt.date | None:
    """The last dispensing date the commitment may be reused for (seed 003 §5.3, §11.1 examples), or
    ``None`` when it never may: its coverage ended before the day of the consultation."""
    return None if coverage.end < consulted else coverage.end


@dataclass(frozen=True)
class AgreementFields:
    """The fields an agreement number fixes (seed 003 §5.4.1: "certains champs résultant de cette
    consultation"); the invoice carries them back with the number."""

    insurer_code: str
    niss: str
    provider_inami: str
    dispensing: dt.date
    coverage: Coverage

    def canonical(self) -> bytes:
        status = self.coverage.status
        parts = (
            AGREEMENT_VERSION,
            self.insurer_code,
            self.niss,
            self.provider_inami,
            self.dispensing.isoformat(),
            self.coverage.start.isoformat(),
            self.coverage.end.isoformat(),
            status.ct1,
            status.ct2,
            "P" if status.preferential_rate else "-",
            "M" if status.maximum_billing else "-",
        )
        return "|".join(parts).encode("ascii")


def agreement_number(key: bytes, fields: AgreementFields) -> str:
    """The insurer's agreement number for a commitment: ``<insurer>-<20 base32 characters>``."""
    digest = hmac.new(key, fields.canonical(), hashlib.sha256).digest()
    text = base64.b32encode(digest).decode("ascii")[:AGREEMENT_CHARACTERS]
    return f"{fields.insurer_code}-{text}"


def agreement_is_genuine(key: bytes, fields: AgreementFields, number: str) -> bool:
    """Whether ``number`` is the insurer's agreement number for ``fields`` (constant-time comparison)."""
    return hmac.compare_digest(agreement_number(key, fields).encode(), number.encode("utf-8", "replace"))


class Basis(enum.Enum):
    """How the pharmacist obtained the data a line is billed with (seed 003 §5.4.1)."""

    UNKNOWN = "UNKNOWN"
    CONSULTED = "CONSULTED"
    """Consulted online at the dispensing."""
    REUSED = "REUSED"
    """A commitment obtained earlier, reused while the network was unavailable (§5.3)."""


@dataclass(frozen=True)
class Commitment:
    """A payment commitment as an invoice line carries it back: the fields and the agreement number."""

    dispensing: dt.date
    coverage: Coverage
    agreement_number: str


@dataclass(frozen=True)
class TarificationLine:
    """The insurability side of one line of a pharmacy's invoice."""

    niss: str
    provider_inami: str
    dispensing: dt.date
    status: InsurabilityStatus
    """The status the line was billed with."""
    basis: Basis = Basis.UNKNOWN
    commitment: Commitment | None = None


class Verdict(enum.Enum):
    PAID_BASIC_PRINCIPLE = "PAID_BASIC_PRINCIPLE"
    PAID_COMMITMENT = "PAID_COMMITMENT"
    REJECTED = "REJECTED"


@dataclass(frozen=True)
class LineDecision:
    verdict: Verdict
    reason: str = ""


def validate_line(
    periods: Sequence[InsurabilityPeriod], line: TarificationLine, *, insurer_code: str, key: bytes
) -> LineDecision:
    """Seed 003 §5.1: the basic principle first (the insurer's own data on the dispensing date give the same
    status: paid, whatever the proof); on a discordance, the proof: the agreement number must be genuine for
    the fields the line carries, the line billed with the committed status, the dispensing inside the
    coverage, and a line "consulted at dispensing" on the commitment's own dispensing date. Otherwise
    rejected, with the first reason found.

    *decision*: "the same result of the calculation" is read as the same status (CT1/CT2, preferential
    rate, maximum billing): the sandbox computes no amounts, and the status is what the amounts follow."""
    own = period_at(periods, line.dispensing)
    if own is not None and own.status == line.status:
        return LineDecision(Verdict.PAID_BASIC_PRINCIPLE)
    committed = line.commitment
    if committed is None or not committed.agreement_number:
        return LineDecision(Verdict.REJECTED, "NO_RIGHT" if own is None else "NO_COMMITMENT")
    fields = AgreementFields(
        insurer_code, line.niss, line.provider_inami, committed.dispensing, committed.coverage
    )
    if not agreement_is_genuine(key, fields, committed.agreement_number):
        return LineDecision(Verdict.REJECTED, "AGREEMENT_NOT_GENUINE")
    if committed.coverage.status != line.status:
        return LineDecision(Verdict.REJECTED, "NOT_THE_COMMITTED_STATUS")
    if not committed.coverage.holds(line.dispensing):
        return LineDecision(Verdict.REJECTED, "OUTSIDE_COVERAGE")
    if line.basis is Basis.CONSULTED and committed.dispensing != line.dispensing:
        return LineDecision(Verdict.REJECTED, "NOT_CONSULTED_AT_DISPENSING")
    return LineDecision(Verdict.PAID_COMMITMENT)


__all__ = [
    "COVERAGE_DAYS",
    "GENERAL_REGIME",
    "AgreementFields",
    "Basis",
    "Commitment",
    "Coverage",
    "InsurabilityPeriod",
    "InsurabilityStatus",
    "LineDecision",
    "TarificationLine",
    "Verdict",
    "agreement_is_genuine",
    "agreement_number",
    "around",
    "default_periods",
    "payment_commitment",
    "period_at",
    "reusable_until",
    "validate_line",
]
