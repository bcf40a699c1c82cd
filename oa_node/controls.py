"""Primary controls of SPEC §3.5, as pure functions: formats, mandatory fields, dates against the
processing date, the requester and the patient against what the OA knows.

Nothing here reads the clock or the database: the caller passes the processing date and the rows it
looked up. Each function returns field violations with MyCareNet codes (or a parsed value); the
caller raises them all at once with :func:`reject` before anything is changed.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mycarenet_core import dates
from mycarenet_core.errors import FieldViolation, McnCode, MeshError, already_exists, invalid_argument
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.identifiers import (
    IdentifierError,
    Inami,
    Niss,
    Role,
    Sex,
    parse_inami,
    parse_member_number,
    parse_niss,
    routing_insurer,
    sex_compatible,
)
from oa_node.convert import role_from_proto
from oa_node.repositories.members import Period, covers

Violations = list[FieldViolation]

CONSULT_MAX_YEARS_BACK = 2
LIST_YEARS_BACK = 2


class Request(enum.Enum):
    """Request types, and the roles entitled to each (SPEC §3 table, seed 001 annex 5)."""

    CONSULT = "consult"
    NOTIFY = "notify"
    LIST = "list"
    ENROL = "enrol"


ENTITLED: dict[Request, frozenset[Role]] = {
    Request.CONSULT: frozenset(
        {
            Role.GENERAL_PRACTITIONER,
            Role.GP_IN_TRAINING,
            Role.GP_NON_ACCREDITED,
            Role.PHYSICIAN_NO_COMPETENCE,
            Role.SPECIALIST,
            Role.DENTIST,
            Role.MEDICAL_HOUSE,
        }
    ),
    Request.NOTIFY: frozenset({Role.GENERAL_PRACTITIONER, Role.GP_IN_TRAINING, Role.MEDICAL_HOUSE}),
    Request.LIST: frozenset({Role.GENERAL_PRACTITIONER, Role.MEDICAL_HOUSE}),
    Request.ENROL: frozenset({Role.GENERAL_PRACTITIONER, Role.MEDICAL_HOUSE}),
}


def reject(violations: Sequence[FieldViolation]) -> None:
    """Raise INVALID_ARGUMENT with every violation, if there is any."""
    if violations:
        raise invalid_argument(violations)


def _v(field: str, code: int, description: str) -> FieldViolation:
    return FieldViolation(field, code, description)


# --- identifiers -----------------------------------------------------------------------------------------


def inami(raw: str, field: str, out: Violations, *, required: bool = True) -> Inami | None:
    """A parsed INAMI number, or a violation (100 missing, 111 format, 112 check digits)."""
    if not raw.strip() and not required:
        return None
    try:
        return parse_inami(raw)
    except IdentifierError as error:
        out.append(_v(field, error.code, error.reason))
        return None


def niss(raw: str, field: str, out: Violations, *, today: dt.date | None = None) -> Niss | None:
    try:
        return parse_niss(raw, today=today)
    except IdentifierError as error:
        out.append(_v(field, error.code, error.reason))
        return None


def date(value: common_pb2.Date, field: str, out: Violations, *, required: bool = True) -> dt.date | None:
    """A date (100 when mandatory and missing, 113 when implausible)."""
    result = dates.check(value, field, required=required)
    if isinstance(result, FieldViolation):
        out.append(result)
        return None
    return result


def text(value: str, field: str, out: Violations) -> str:
    if not value.strip():
        out.append(_v(field, McnCode.MANDATORY_FIELD_MISSING, "mandatory"))
    return value.strip()


# --- the request context ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """The requester of record and the processing date, from a valid RequestContext."""

    inami: Inami
    reference: str
    today: dt.date


def caller(context: context_pb2.RequestContext, out: Violations) -> Caller | None:
    """Formats of the context: requester INAMI, its role, the reference, the processing date."""
    found = inami(context.requester_inami, "context.requester_inami", out)
    if found is not None and context.requester_role:
        declared = role_from_proto(context.requester_role)
        if declared is not found.role:
            out.append(
                _v(
                    "context.requester_role",
                    McnCode.IDENTIFICATION_INCONSISTENT,
                    "role does not match the INAMI competence code",
                )
            )
    if context.organisation_inami:
        inami(context.organisation_inami, "context.organisation_inami", out)
    reference = text(context.requester_reference, "context.requester_reference", out)
    today = date(context.processing_date, "context.processing_date", out)
    if found is None or today is None or not reference:
        return None
    return Caller(found, reference, today)


def requester(
    who: Caller,
    request: Request,
    *,
    known: bool,
    registered_role: int | None = None,
    valid_from: dt.date | None = None,
    valid_until: dt.date | None = None,
) -> Violations:
    """The requester is known to the OA (141), within the validity the cadastre records for it on the
    processing date, and entitled to this request type (140)."""
    if not known:
        return [_v("context.requester_inami", McnCode.PROVIDER_UNKNOWN, "provider unknown to this insurer")]
    if (valid_from is not None and who.today < valid_from) or (
        valid_until is not None and who.today > valid_until
    ):
        span = f"{valid_from or '…'} to {valid_until or '…'}"
        return [
            _v(
                "context.requester_inami",
                McnCode.PROVIDER_NOT_ENTITLED,
                f"the cadastre lets this provider practise from {span}, not on {who.today}",
            )
        ]
    if registered_role and role_from_proto(registered_role) not in (None, who.inami.role):
        return [
            _v(
                "context.requester_inami",
                McnCode.AUTHOR_MISMATCH,
                "the INAMI number does not match the provider registered under it",
            )
        ]
    if who.inami.role not in ENTITLED[request]:
        return [
            _v(
                "context.requester_inami",
                McnCode.PROVIDER_NOT_ENTITLED,
                f"a {who.inami.role.value} is not entitled to {request.value}",
            )
        ]
    return []


# --- the patient -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientKey:
    """How the request names the patient (exactly one of ``niss`` / ``registration_number``)."""

    niss: str | None
    registration_number: str | None
    sex: Sex | None


_SEXES = {
    common_pb2.SEX_MALE: Sex.MALE,
    common_pb2.SEX_FEMALE: Sex.FEMALE,
    common_pb2.SEX_UNKNOWN: Sex.UNKNOWN,
}


def patient_key(
    selector: common_pb2.PatientSelector, insurer_code: str, out: Violations, field: str = "patient"
) -> PatientKey | None:
    """Format of the patient selector: NISS (100/111/112/113), or mutuality (121, 155) + member number."""
    sex = _SEXES.get(selector.sex)
    which = selector.WhichOneof("identifier")
    if which == "niss":
        parsed = niss(selector.niss, f"{field}.niss", out)
        return PatientKey(parsed.value, None, sex) if parsed else None
    if which == "member":
        try:
            number = parse_member_number(selector.member.mutuality_code, selector.member.registration_number)
            routed = routing_insurer(number.mutuality_code)
        except IdentifierError as error:
            sub = "mutuality_code" if error.code == McnCode.MUTUALITY_UNKNOWN else "registration_number"
            if error.code == McnCode.MANDATORY_FIELD_MISSING and not selector.member.mutuality_code.strip():
                sub = "mutuality_code"
            out.append(_v(f"{field}.member.{sub}", error.code, error.reason))
            return None
        if routed != insurer_code:
            out.append(
                _v(
                    f"{field}.member.mutuality_code",
                    McnCode.ROUTING_INCONSISTENT,
                    f"mutuality {number.mutuality_code} is not served by insurer {insurer_code}",
                )
            )
            return None
        return PatientKey(None, number.registration_number, sex)
    out.append(_v(field, McnCode.MANDATORY_FIELD_MISSING, "patient NISS or member number is mandatory"))
    return None


def patient(
    key: PatientKey,
    *,
    member_niss: str | None,
    periods: Iterable[Period],
    on: dt.date,
    field: str = "patient",
) -> Violations:
    """The patient is a member (120 / 122), affiliated on ``on`` (120), of a compatible sex (136)."""
    if member_niss is None:
        if key.niss is not None:
            return [_v(f"{field}.niss", McnCode.PATIENT_UNKNOWN, "NISS unknown to this insurer")]
        return [
            _v(
                f"{field}.member.registration_number",
                McnCode.MEMBER_NUMBER_UNKNOWN,
                "member number unknown to this insurer",
            )
        ]
    if not covers(tuple(periods), on):
        path = f"{field}.niss" if key.niss is not None else f"{field}.member.registration_number"
        return [_v(path, McnCode.PATIENT_UNKNOWN, f"not affiliated with this insurer on {on.isoformat()}")]
    if key.sex is not None and not sex_compatible(parse_niss(member_niss), key.sex):
        return [_v(f"{field}.sex", McnCode.SEX_INCOMPATIBLE, "sex incompatible with the NISS")]
    return []


# --- dates -----------------------------------------------------------------------------------------------


def years_back(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def consult_date(value: dt.date, today: dt.date, field: str = "request_date") -> Violations:
    """Today or in the past (146), at most 2 years back (145)."""
    if value > today:
        return [_v(field, McnCode.DATE_IN_FUTURE, "date in the future")]
    if value < years_back(today, CONSULT_MAX_YEARS_BACK):
        return [_v(field, McnCode.DATE_TOO_OLD, "date more than 2 years in the past")]
    return []


def contact_date(
    value: dt.date, today: dt.date, *, max_days: int | None, field: str = "contact_date"
) -> Violations:
    """Not in the future (146), at most ``max_days`` back (166)."""
    if value > today:
        return [_v(field, McnCode.DATE_IN_FUTURE, "contact date in the future")]
    if max_days is not None and (today - value).days > max_days:
        return [_v(field, McnCode.CONTACT_TOO_OLD, f"contact more than {max_days} days ago")]
    return []


def list_year(year: int, today: dt.date, field: str = "year") -> Violations:
    """The current year or one of the two previous ones (100 / 146 / 145)."""
    if not year:
        return [_v(field, McnCode.MANDATORY_FIELD_MISSING, "year is mandatory")]
    if year > today.year:
        return [_v(field, McnCode.DATE_IN_FUTURE, "year in the future")]
    if year < today.year - LIST_YEARS_BACK:
        return [_v(field, McnCode.DATE_TOO_OLD, "year more than 2 years in the past")]
    return []


_CODE = re.compile(r"^\d{6}$")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def nomenclature(code: str, contact_codes: frozenset[str], field: str = "nomenclature_code") -> Violations:
    """Mandatory (100), six digits (111), a consultation or visit code (130)."""
    if not code.strip():
        return [_v(field, McnCode.MANDATORY_FIELD_MISSING, "nomenclature code is mandatory")]
    if not _CODE.match(code.strip()):
        return [_v(field, McnCode.BAD_FORMAT, "nomenclature code must be 6 digits")]
    if code.strip() not in contact_codes:
        return [_v(field, McnCode.VALUE_NOT_ALLOWED, "not a consultation or visit code")]
    return []


def contact_time(value: str, field: str = "contact_time") -> Violations:
    if value and not _TIME.match(value):
        return [_v(field, McnCode.BAD_FORMAT, "contact time must be HH:MM")]
    return []


# --- enrolment -------------------------------------------------------------------------------------------

_IBAN = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9]{10,30}$")
_BIC = re.compile(r"^[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?$")


def bank_account(account: common_pb2.BankAccount, field: str = "bank_account") -> Violations:
    """IBAN mandatory with valid ISO 13616 check digits (100/111/112); BIC 8 or 11 characters (111)."""
    out: Violations = []
    iban = account.iban.replace(" ", "").upper()
    if not iban:
        out.append(_v(f"{field}.iban", McnCode.MANDATORY_FIELD_MISSING, "IBAN is mandatory"))
    elif not _IBAN.match(iban):
        out.append(_v(f"{field}.iban", McnCode.BAD_FORMAT, "malformed IBAN"))
    elif int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 != 1:
        out.append(_v(f"{field}.iban", McnCode.BAD_CHECK_DIGIT, "IBAN check digits do not match"))
    if account.bic and not _BIC.match(account.bic.upper()):
        out.append(_v(f"{field}.bic", McnCode.BAD_FORMAT, "BIC must be 8 or 11 characters"))
    return out


def already_enrolled(since: dt.date) -> MeshError:
    """168: a GP enrols once and there is no de-enrolment (SPEC §9)."""
    return already_exists(
        "ALREADY_ENROLLED", f"already enrolled since {since.isoformat()}", code=McnCode.ALREADY_ENROLLED
    )
