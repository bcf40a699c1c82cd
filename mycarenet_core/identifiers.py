"""Belgian identifiers used by MyCareNet eDMG (SPEC §2): NISS, INAMI/RIZIV provider numbers, member numbers.

Everything here is pure: no I/O, no clock (callers pass ``today`` when a future-date check is wanted).
Errors are raised as :class:`IdentifierError` carrying the MyCareNet error code:

* 100 mandatory element missing
* 111 bad format
* 112 bad check digit
* 113 implausible date
* 121 unknown mutuality
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass
from typing import TypeGuard

from mycarenet_core.codes import McnCode

__all__ = [
    "INSURER_CODES",
    "INSURER_NAMES",
    "IdentifierError",
    "Inami",
    "MemberNumber",
    "Niss",
    "Profession",
    "Role",
    "Sex",
    "is_valid_inami",
    "is_valid_niss",
    "make_inami",
    "make_niss",
    "parse_inami",
    "parse_member_number",
    "parse_niss",
    "routing_insurer",
    "sex_compatible",
]


_SEPARATORS = str.maketrans("", "", ".- ")


class IdentifierError(ValueError):
    """An identifier failed validation; ``code`` is the MyCareNet error code, ``reason`` a short text."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def _present(raw: str | None) -> TypeGuard[str]:
    """True for a string that is not blank (guards against None and non-str input)."""
    return isinstance(raw, str) and bool(raw.strip())


def _digits(raw: str | None, what: str, length: int) -> str:
    """Strip separators and require exactly ``length`` ASCII digits."""
    if not _present(raw):
        raise IdentifierError(McnCode.MANDATORY_FIELD_MISSING, f"{what} is missing")
    value = raw.strip().translate(_SEPARATORS)
    if len(value) != length or not (value.isascii() and value.isdigit()):
        raise IdentifierError(McnCode.BAD_FORMAT, f"{what} must be {length} digits")
    return value


def _mod97_check(number: int) -> int:
    """The ``97 - (n mod 97)`` check value (1..97) shared by NISS and INAMI."""
    return 97 - number % 97


# --------------------------------------------------------------------------------------------------------
# NISS
# --------------------------------------------------------------------------------------------------------


class Sex(enum.Enum):
    MALE = "M"
    FEMALE = "F"
    UNKNOWN = "U"


@dataclass(frozen=True)
class Niss:
    """A parsed national number (NISS/INSZ/SSIN).

    ``value`` is the canonical 11-digit string. ``birth_date`` is None when the day or month is unknown (00);
    ``birth_year`` is always known. ``bis_sex_known`` is None for ordinary numbers, False for month+20 and
    True for month+40 bis numbers.
    """

    value: str
    birth_date: datetime.date | None
    birth_year: int
    sex: Sex
    is_bis: bool
    bis_sex_known: bool | None

    @property
    def birth_month(self) -> int | None:
        """Birth month (1..12) or None when unknown."""
        month = int(self.value[2:4]) % 20
        return month or None

    @property
    def birth_day(self) -> int | None:
        """Birth day (1..31) or None when unknown."""
        return int(self.value[4:6]) or None

    @property
    def sequence(self) -> int:
        return int(self.value[6:9])

    def __str__(self) -> str:
        return self.value


def parse_niss(raw: str | None, *, today: datetime.date | None = None) -> Niss:
    """Validate and decode a NISS; separators ``.``, ``-`` and spaces are ignored.

    Check order: 100 (missing), 111 (not 11 digits, month not in 00..12 / 20..32 / 40..52, day > 31,
    sequence 000 or 999), 112 (check digit valid for neither century), 113 (impossible calendar date, or
    a birth date after ``today`` when given).
    """
    value = _digits(raw, "NISS", 11)
    yy, mm, dd = int(value[0:2]), int(value[2:4]), int(value[4:6])
    sequence, check = int(value[6:9]), int(value[9:11])

    if mm <= 12:
        is_bis, bis_sex_known, month = False, None, mm
    elif 20 <= mm <= 32:
        is_bis, bis_sex_known, month = True, False, mm - 20
    elif 40 <= mm <= 52:
        is_bis, bis_sex_known, month = True, True, mm - 40
    else:
        raise IdentifierError(McnCode.BAD_FORMAT, f"NISS month {mm:02d} is impossible")
    if dd > 31:
        raise IdentifierError(McnCode.BAD_FORMAT, f"NISS day {dd:02d} is impossible")
    if sequence in (0, 999):
        raise IdentifierError(McnCode.BAD_FORMAT, f"NISS sequence {sequence:03d} is not assignable")

    body = int(value[:9])
    candidates = [
        century
        for century, number in ((1900, body), (2000, 2_000_000_000 + body))
        if _mod97_check(number) == check
    ]
    if not candidates:
        raise IdentifierError(McnCode.BAD_CHECK_DIGIT, "NISS check digits do not match")
    if len(candidates) > 1:  # arithmetically impossible (2e9 mod 97 != 0); prefer a reading in the past
        candidates = [c for c in candidates if today is not None and c + yy <= today.year][-1:] or [1900]
    year = candidates[0] + yy

    birth_date: datetime.date | None = None
    if month and dd:
        try:
            birth_date = datetime.date(year, month, dd)
        except ValueError:
            reason = f"NISS birth date {year}-{month:02d}-{dd:02d} does not exist"
            raise IdentifierError(McnCode.IMPLAUSIBLE_DATE, reason) from None
    if today is not None and _after(year, month, dd, today):
        raise IdentifierError(McnCode.IMPLAUSIBLE_DATE, "NISS birth date is in the future")

    sex = Sex.MALE if sequence % 2 else Sex.FEMALE
    if bis_sex_known is False:  # bis number assigned while the sex was unknown
        sex = Sex.UNKNOWN
    return Niss(value, birth_date, year, sex, is_bis, bis_sex_known)


def _after(year: int, month: int, day: int, today: datetime.date) -> bool:
    """True when the (possibly partial: month/day 0 = unknown) birth date is surely after ``today``."""
    if year != today.year or not month:
        return year > today.year
    if month != today.month or not day:
        return month > today.month
    return day > today.day


def is_valid_niss(raw: str | None, *, today: datetime.date | None = None) -> bool:
    """True when :func:`parse_niss` accepts ``raw``."""
    try:
        parse_niss(raw, today=today)
    except IdentifierError:
        return False
    return True


def make_niss(birth_date: datetime.date, sequence: int, *, bis: int = 0) -> str:
    """Build a valid NISS for a birth date in 1900..2099, a sequence 1..998 and ``bis`` in {0, 20, 40}."""
    if not 1900 <= birth_date.year <= 2099:
        raise ValueError("NISS birth year must be within 1900..2099")
    if not 1 <= sequence <= 998:
        raise ValueError("NISS sequence must be within 1..998")
    if bis not in (0, 20, 40):
        raise ValueError("bis must be 0, 20 or 40")
    body = f"{birth_date.year % 100:02d}{birth_date.month + bis:02d}{birth_date.day:02d}{sequence:03d}"
    number = int(body) + (2_000_000_000 if birth_date.year >= 2000 else 0)
    return f"{body}{_mod97_check(number):02d}"


def sex_compatible(niss: Niss, sex: Sex) -> bool:
    """True unless both the NISS and ``sex`` are known and differ."""
    return Sex.UNKNOWN in (niss.sex, sex) or niss.sex is sex


# --------------------------------------------------------------------------------------------------------
# INAMI / RIZIV provider numbers
# --------------------------------------------------------------------------------------------------------


class Profession(enum.Enum):
    """First digit of an INAMI number.

    1 (physician) and 3 (dentist) are official; 5 (pharmacist), 6 (physiotherapist) and 8 (organisation:
    medical house, group practice or pharmacy) are this mesh's convention.
    """

    PHYSICIAN = 1
    DENTIST = 3
    PHARMACIST = 5
    PHYSIOTHERAPIST = 6
    ORGANISATION = 8


class Role(enum.Enum):
    GENERAL_PRACTITIONER = "general_practitioner"
    GP_IN_TRAINING = "gp_in_training"
    GP_NON_ACCREDITED = "gp_non_accredited"
    PHYSICIAN_NO_COMPETENCE = "physician_no_competence"
    SPECIALIST = "specialist"
    DENTIST = "dentist"
    PHARMACIST = "pharmacist"
    MEDICAL_HOUSE = "medical_house"
    GROUP_PRACTICE = "group_practice"
    PHARMACY = "pharmacy"
    PHYSIOTHERAPIST = "physiotherapist"


_PHYSICIAN_ROLES: dict[int, Role] = {
    0: Role.PHYSICIAN_NO_COMPETENCE,
    1: Role.GP_NON_ACCREDITED,
    2: Role.GP_NON_ACCREDITED,
    3: Role.GENERAL_PRACTITIONER,
    4: Role.GENERAL_PRACTITIONER,
    5: Role.GP_IN_TRAINING,
    6: Role.GP_IN_TRAINING,
    # 007..009 are unassigned here: treated as "no competence" (not entitled to hold a DMG).
    7: Role.PHYSICIAN_NO_COMPETENCE,
    8: Role.PHYSICIAN_NO_COMPETENCE,
    9: Role.PHYSICIAN_NO_COMPETENCE,
}
_ORGANISATION_ROLES: dict[str, Role] = {
    "100": Role.MEDICAL_HOUSE,
    "200": Role.GROUP_PRACTICE,
    "300": Role.PHARMACY,
}


def _role(profession: Profession, competence: str) -> Role:
    if profession is Profession.PHYSICIAN:
        return _PHYSICIAN_ROLES.get(int(competence), Role.SPECIALIST)
    if profession is Profession.DENTIST:
        return Role.DENTIST
    if profession is Profession.PHARMACIST:
        return Role.PHARMACIST
    if profession is Profession.PHYSIOTHERAPIST:
        return Role.PHYSIOTHERAPIST
    role = _ORGANISATION_ROLES.get(competence)
    if role is None:
        reason = f"organisation competence {competence} is not 100, 200 or 300"
        raise IdentifierError(McnCode.BAD_FORMAT, reason)
    return role


@dataclass(frozen=True)
class Inami:
    """A parsed INAMI/RIZIV number: profession digit, 5-digit sequence, 2 check digits, 3-digit competence.

    The check digits cover only the first 6 digits; the competence code is not protected by them.
    """

    value: str
    profession: Profession
    sequence: int
    competence: str
    role: Role

    @property
    def is_gp(self) -> bool:
        """True for an accredited general practitioner (competence 003/004)."""
        return self.role is Role.GENERAL_PRACTITIONER

    @property
    def base(self) -> str:
        """The first 8 digits: identify the person or organisation regardless of competence."""
        return self.value[:8]

    def __str__(self) -> str:
        return self.value


def parse_inami(raw: str | None) -> Inami:
    """Validate and decode an INAMI number; separators ``.``, ``-`` and spaces are ignored.

    Codes: 100 missing; 111 not 11 digits, unknown profession digit, or organisation competence other
    than 100/200; 112 check digits do not match ``97 - (first 6 digits mod 97)``.
    """
    value = _digits(raw, "INAMI number", 11)
    try:
        profession = Profession(int(value[0]))
    except ValueError:
        raise IdentifierError(McnCode.BAD_FORMAT, f"unknown INAMI profession digit {value[0]}") from None
    competence = value[8:11]
    role = _role(profession, competence)
    if _mod97_check(int(value[:6])) != int(value[6:8]):
        raise IdentifierError(McnCode.BAD_CHECK_DIGIT, "INAMI check digits do not match")
    return Inami(value, profession, int(value[1:6]), competence, role)


def is_valid_inami(raw: str | None) -> bool:
    """True when :func:`parse_inami` accepts ``raw``."""
    try:
        parse_inami(raw)
    except IdentifierError:
        return False
    return True


def make_inami(profession: Profession, sequence: int, competence: str) -> str:
    """Build a valid INAMI number from a profession, a sequence 0..99999 and a 3-digit competence code."""
    if not 0 <= sequence <= 99_999:
        raise ValueError("INAMI sequence must be within 0..99999")
    if len(competence) != 3 or not (competence.isascii() and competence.isdigit()):
        raise ValueError("INAMI competence must be 3 digits")
    _role(profession, competence)
    head = f"{profession.value}{sequence:05d}"
    return f"{head}{_mod97_check(int(head)):02d}{competence}"


# --------------------------------------------------------------------------------------------------------
# Mutualities and member numbers
# --------------------------------------------------------------------------------------------------------

INSURER_CODES: tuple[str, ...] = ("100", "200", "300", "400", "500", "600", "900")
INSURER_NAMES: dict[str, str] = {
    "100": "Christian mutualities",
    "200": "Neutral mutualities",
    "300": "Socialist mutualities",
    "400": "Liberal mutualities",
    "500": "Independent mutualities",
    "600": "CAAMI/HZIV auxiliary fund",
    "900": "HR Rail health care fund",
}
# Codes that are valid but served through another insurer's node.
_ROUTED_VIA: dict[str, str] = {"750": "600", "999": "600"}

_REGISTRATION_MAX = 13


def routing_insurer(code: str) -> str:
    """The insurer code whose node serves mutuality ``code`` (750 and 999 go through 600); else 121."""
    code = code.strip() if isinstance(code, str) else ""
    if code in INSURER_CODES:
        return code
    if code in _ROUTED_VIA:
        return _ROUTED_VIA[code]
    raise IdentifierError(McnCode.MUTUALITY_UNKNOWN, f"unknown mutuality code {code!r}")


@dataclass(frozen=True)
class MemberNumber:
    """A member of a mutuality: ``mutuality_code`` plus canonical ``registration_number``."""

    mutuality_code: str
    registration_number: str

    @property
    def insurer(self) -> str:
        """The insurer code to route the request to."""
        return routing_insurer(self.mutuality_code)


def parse_member_number(mutuality_code: str | None, registration_number: str | None) -> MemberNumber:
    """Validate a member number.

    Rule (mesh convention): the registration number, after removing ``.``, ``-``, ``/`` and spaces and
    upper-casing, is 1..13 ASCII letters or digits. Codes: 100 either part missing; 121 mutuality code
    not in :data:`INSURER_CODES` nor 750/999; 111 malformed registration number.
    """
    if not _present(mutuality_code):
        raise IdentifierError(McnCode.MANDATORY_FIELD_MISSING, "mutuality code is missing")
    if not _present(registration_number):
        raise IdentifierError(McnCode.MANDATORY_FIELD_MISSING, "registration number is missing")
    code = mutuality_code.strip()
    routing_insurer(code)
    reg = registration_number.strip().translate(str.maketrans("", "", ".-/ ")).upper()
    if not 1 <= len(reg) <= _REGISTRATION_MAX or not (reg.isascii() and reg.isalnum()):
        raise IdentifierError(McnCode.BAD_FORMAT, "registration number must be 1..13 letters or digits")
    return MemberNumber(code, reg)
