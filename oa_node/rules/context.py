"""What the rules need from outside the patient's file: tariffs, codes, enrolments, groups, the patient.

The persistence layer builds one :class:`RuleContext` per call from its own tables (enrolments,
group practices, MemberData, tariff table); the rules only read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from mycarenet_core.codes import McnCode

from .errors import DmgRuleError
from .model import TariffCategory

PAPER_DMG_CODE = "102771"
"""Nomenclature code of the paper DMG opening/prolongation (seed 002)."""

DEFAULT_CONTACT_CODES: frozenset[str] = frozenset(
    {
        "101010",  # consultation at the GP's practice (accredited GP)
        "101032",  # consultation at the practice, accredited GP (variant)
        "101076",  # consultation at the practice, GP in training
        "103110",  # home visit, GP
        "103132",  # home visit, accredited GP
        "104110",  # home visit, variant
    }
)
"""Consultation / visit codes that count as a contact (configurable, SPEC §2)."""

CHRONIC_TARIFF_FROM_YEAR = 2016
"""Seed 002: 'Depuis le 1er janvier 2016, le montant du DMG s'élève à 55 EUR' for chronic 45-74."""


def _eur(value: str) -> Decimal:
    return Decimal(value)


# 2016 is the only year fixed by the seeds (seed 002 / SPEC §4: 30 EUR, 55 EUR chronic 45-74).
# The other amounts are ILLUSTRATIVE, not official INAMI fees: before 2016 a slowly rising fee with
# the 2015 index jump ('saut d'index') freezing 2015 at the 2014 level; from 2017 on, both categories
# grow by 2 % a year compounded from 2016, rounded half-up to the cent.
DEFAULT_TARIFFS: Mapping[int, Mapping[TariffCategory, Decimal]] = {
    2010: {TariffCategory.STANDARD: _eur("27.20")},
    2011: {TariffCategory.STANDARD: _eur("27.76")},
    2012: {TariffCategory.STANDARD: _eur("28.21")},
    2013: {TariffCategory.STANDARD: _eur("28.91")},
    2014: {TariffCategory.STANDARD: _eur("29.32")},
    2015: {TariffCategory.STANDARD: _eur("29.32")},
    2016: {TariffCategory.STANDARD: _eur("30.00"), TariffCategory.CHRONIC_45_74: _eur("55.00")},
    2017: {TariffCategory.STANDARD: _eur("30.60"), TariffCategory.CHRONIC_45_74: _eur("56.10")},
    2018: {TariffCategory.STANDARD: _eur("31.21"), TariffCategory.CHRONIC_45_74: _eur("57.22")},
    2019: {TariffCategory.STANDARD: _eur("31.84"), TariffCategory.CHRONIC_45_74: _eur("58.37")},
    2020: {TariffCategory.STANDARD: _eur("32.47"), TariffCategory.CHRONIC_45_74: _eur("59.53")},
    2021: {TariffCategory.STANDARD: _eur("33.12"), TariffCategory.CHRONIC_45_74: _eur("60.72")},
    2022: {TariffCategory.STANDARD: _eur("33.78"), TariffCategory.CHRONIC_45_74: _eur("61.94")},
    2023: {TariffCategory.STANDARD: _eur("34.46"), TariffCategory.CHRONIC_45_74: _eur("63.18")},
    2024: {TariffCategory.STANDARD: _eur("35.15"), TariffCategory.CHRONIC_45_74: _eur("64.44")},
    2025: {TariffCategory.STANDARD: _eur("35.85"), TariffCategory.CHRONIC_45_74: _eur("65.73")},
    2026: {TariffCategory.STANDARD: _eur("36.57"), TariffCategory.CHRONIC_45_74: _eur("67.04")},
    2027: {TariffCategory.STANDARD: _eur("37.30"), TariffCategory.CHRONIC_45_74: _eur("68.39")},
    2028: {TariffCategory.STANDARD: _eur("38.05"), TariffCategory.CHRONIC_45_74: _eur("69.75")},
    2029: {TariffCategory.STANDARD: _eur("38.81"), TariffCategory.CHRONIC_45_74: _eur("71.15")},
    2030: {TariffCategory.STANDARD: _eur("39.58"), TariffCategory.CHRONIC_45_74: _eur("72.57")},
}


SEED_TARIFF_YEARS = frozenset({2016})
"""The years whose amounts the seeds give (seed 002); every other year's amounts are illustrative."""

CHRONIC_PAYABLE_FROM = date(2016, 7, 1)
"""Seed 002: the 55 EUR of 2016 'À partir du 1er juillet, les organismes assureurs vous payeront'."""

DEFAULT_PAYABLE_FROM: Mapping[tuple[int, TariffCategory], date] = {
    (CHRONIC_TARIFF_FROM_YEAR, TariffCategory.CHRONIC_45_74): CHRONIC_PAYABLE_FROM
}


def tariff_source(year: int) -> str:
    """The label of a tariff line's source: "seed 002" or "illustrative"."""
    return "seed 002" if year in SEED_TARIFF_YEARS else "illustrative"


class TariffMissingError(DmgRuleError):
    """The tariff table has no amount for a year (before its first): the DMG did not exist then (it began
    in 2010 in the sandbox's table), so a fee of that year is refused with 145, never an internal error."""

    def __init__(self, year: int, first: int | None, field: str | None = None) -> None:
        since = f" (the tariff table starts in {first})" if first is not None else ""
        super().__init__(McnCode.DATE_TOO_OLD, f"no DMG tariff for {year}{since}", field)
        self.year = year


@dataclass(frozen=True, slots=True)
class TariffTable:
    """DMG fee by year and category; a category missing for a year falls back to STANDARD."""

    amounts: Mapping[int, Mapping[TariffCategory, Decimal]] = field(default_factory=lambda: DEFAULT_TARIFFS)
    payable_from: Mapping[tuple[int, TariffCategory], date] = field(
        default_factory=lambda: DEFAULT_PAYABLE_FROM
    )
    """A fee of that year and category is not paid before that day (seed 002's 55 EUR from 1 July 2016)."""

    def not_paid_before(self, year: int, category: TariffCategory) -> date | None:
        """The day before which a fee of ``year`` and ``category`` is not paid, if any."""
        return self.payable_from.get((year, category))

    @property
    def first_year(self) -> int | None:
        """The first year with a STANDARD fee; None for an empty table."""
        return min((y for y in self.amounts if TariffCategory.STANDARD in self.amounts[y]), default=None)

    def require(self, year: int, field: str) -> None:
        """Refuse (145, on ``field``) an event of a year before the table's first: no fee could be paid."""
        first = self.first_year
        if first is None or year < first:
            raise TariffMissingError(year, first, field)

    def amount(self, year: int, category: TariffCategory) -> Decimal:
        """The fee of ``year`` for ``category`` (seed 002). A fee stays in force until the next one: a
        year after the table's last has the last year's amounts (the sandbox clock may run past it)."""
        in_force = [y for y in self.amounts if y <= year and TariffCategory.STANDARD in self.amounts[y]]
        if not in_force:
            raise TariffMissingError(year, self.first_year)
        by_category = self.amounts[max(in_force)]
        return by_category.get(category, by_category[TariffCategory.STANDARD])


@dataclass(frozen=True, slots=True)
class MedicalHouseContract:
    """The patient's subscription to a medical house (forfait) from ``start`` to ``end`` (open if None)."""

    house: str
    start: date
    end: date | None = None

    def covers(self, day: date) -> bool:
        """Whether the contract runs on ``day``."""
        return self.start <= day and (self.end is None or day <= self.end)


@dataclass(frozen=True, slots=True)
class PatientProfile:
    """The patient data the rules need (from MemberData, SPEC §7)."""

    birth_date: date
    chronic_status_years: frozenset[int] = frozenset()
    """Calendar years for which the patient has the 'affection chronique' status (the whole year)."""
    chronic_periods: tuple[tuple[date, date | None], ...] = ()
    """Periods of the 'affection chronique' status as the insurer holds it (end None: open)."""
    medical_house_contracts: tuple[MedicalHouseContract, ...] = ()

    def age_on(self, day: date) -> int:
        """Age in completed years on ``day``."""
        before_birthday = (day.month, day.day) < (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - (1 if before_birthday else 0)

    def chronic_on(self, day: date) -> bool:
        """Whether the patient has the chronic status on ``day``."""
        return day.year in self.chronic_status_years or any(
            start <= day and (end is None or day <= end) for start, end in self.chronic_periods
        )

    def medical_house_on(self, day: date) -> str | None:
        """The medical house the patient is under contract with on ``day``, if any."""
        return next((c.house for c in self.medical_house_contracts if c.covers(day)), None)


@dataclass(frozen=True, slots=True)
class RuleContext:
    """Everything outside the patient's file that the rules read."""

    patient: PatientProfile
    enrolled: frozenset[str] = frozenset()
    """Providers (GPs, medical houses) enrolled for the eDMG (SPEC §3, §9)."""
    enrolled_since: Mapping[str, date] = field(default_factory=dict)
    """When each enrolled provider's enrolment starts (when known; else ``enrolled`` says, on any date)."""
    group_of: Mapping[str, str] = field(default_factory=dict)
    """Provider -> registered group practice ('groupement en médecine générale enregistré', seed 002)."""
    supervisor_of: Mapping[str, str] = field(default_factory=dict)
    """GP in training -> supervisor: the trainee's contacts count for the supervisor's DMG (SPEC §9)."""
    contact_codes: frozenset[str] = DEFAULT_CONTACT_CODES
    tariffs: TariffTable = field(default_factory=TariffTable)
    max_notification_delay_days: int | None = 7
    """SPEC §3.5 code 166 ('in the later rules, at most 7 days back'); None disables the check."""
    closure_on_paper_takeover: bool = True
    """Seed 000 §3.3.5: the OAs 'could' also send a closure when a 102771 takes the DMG over."""

    def is_enrolled(self, provider: str, on: date | None = None) -> bool:
        """Whether ``provider`` is enrolled for the eDMG: on the processing date, or on ``on`` when given
        (a paper attestation is judged by its own date, issue 14 correction 8)."""
        if on is None or provider not in self.enrolled_since:
            return provider in self.enrolled
        return self.enrolled_since[provider] <= on

    def acts_for(self, provider: str, holder: str) -> bool:
        """Whether a contact by ``provider`` counts as a contact with ``holder`` (seed 002, SPEC §3.3).

        True for the holder himself, a member of the holder's registered group practice, a GP in
        training supervised by the holder, and a GP of the medical house that holds the DMG.
        """
        if provider == holder or self.supervisor_of.get(provider) == holder:
            return True
        group = self.group_of.get(provider)
        return group is not None and (group == holder or group == self.group_of.get(holder))

    def category(self, service_date: date) -> TariffCategory:
        """Tariff category of the fee for a contact on ``service_date`` (seed 002)."""
        chronic = self.patient.chronic_on(service_date)
        if (
            chronic
            and service_date.year >= CHRONIC_TARIFF_FROM_YEAR
            and 45 <= self.patient.age_on(service_date) <= 74
        ):
            return TariffCategory.CHRONIC_45_74
        return TariffCategory.STANDARD


def _competence(inami: str) -> str | None:
    """Competence code (last 3 digits) of a physician's 11-digit INAMI number (SPEC §2), else None."""
    if len(inami) == 11 and inami.isdigit() and inami[0] == "1":
        return inami[8:]
    return None


def is_gp_in_training(inami: str) -> bool:
    """Competence 005/006: a GP in training, who acts under a supervisor (SPEC §2, §9)."""
    return _competence(inami) in {"005", "006"}


def is_accredited_gp(inami: str) -> bool:
    """Competence 003/004: an accredited general practitioner (SPEC §2)."""
    return _competence(inami) in {"003", "004"}
