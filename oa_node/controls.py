"""Primary controls of SPEC §3.5: each request parsed into a typed value, then checked against the
processing date and what the OA knows.

Parsing uses the one validation idiom of the mesh (:class:`mycarenet_core.validation.Checker`): every
format violation of a request (with its MyCareNet code) is collected and raised at once, as one
INVALID_ARGUMENT, before anything is read or changed; a ``parse_*`` function returns its typed value
only when the whole request is valid. The checks that need the processing date or a row the OA looked
up (``check_*``) raise the one violation they find. Nothing here reads the clock or the database.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message as ProtoMessage

from mycarenet_core.codes import McnCode
from mycarenet_core.errors import MeshError, already_exists, field_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2 as intake_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from mycarenet_core.identifiers import (
    IdentifierError,
    Inami,
    Role,
    Sex,
    parse_member_number,
    parse_niss,
    routing_insurer,
    sex_compatible,
)
from mycarenet_core.validation import Checker
from oa_node import rules as r
from oa_node.convert import role_from_proto
from oa_node.repositories.consult import Registration
from oa_node.repositories.members import Period, covers

T = TypeVar("T")

CONSULT_MAX_YEARS_BACK = 2
LIST_YEARS_BACK = 2
MAX_REFERENCE = 200
"""Requester and intake references (the hub keeps references of at most 200 characters)."""
MAX_NAME = 200
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 500, 5000


class Request(enum.Enum):
    """Request types, and the roles entitled to each (SPEC §3 table, seed 001 annex 5)."""

    CONSULT = "consult"
    NOTIFY = "notify"
    LIST = "list"
    ENROL = "enrol"
    MEMBER_DATA = "member data"
    RIGHTS = "rights consultation"


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
    # Insurability (seed 004, seed 001 annex 2, seed 003 §3.3): every provider who bills a service.
    Request.MEMBER_DATA: frozenset(
        {
            Role.GENERAL_PRACTITIONER,
            Role.GP_IN_TRAINING,
            Role.GP_NON_ACCREDITED,
            Role.PHYSICIAN_NO_COMPETENCE,
            Role.SPECIALIST,
            Role.DENTIST,
            Role.PHYSIOTHERAPIST,
            Role.PHARMACIST,
            Role.PHARMACY,
            Role.MEDICAL_HOUSE,
        }
    ),
    # The payment commitment is the pharmacists' (seed 003 §5): a pharmacy's session, or a pharmacist's own.
    Request.RIGHTS: frozenset({Role.PHARMACIST, Role.PHARMACY}),
}


# --- typed requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """The requester of record and the processing date, from a valid RequestContext."""

    inami: Inami
    reference: str
    today: dt.date
    user: str = ""
    """The pharmacist who opened a pharmacy's session (seed 003 §8.2.2.3); "" otherwise."""
    rejected_invoices_only: bool = False
    """A tarification office (seed 003 §8.2.2.7): insurability only for a rejected tarification line."""


@dataclass(frozen=True)
class PatientKey:
    """How the request names the patient (exactly one of ``niss`` / ``registration_number``)."""

    niss: str | None
    registration_number: str | None
    sex: Sex | None

    @property
    def field(self) -> str:
        """The request field that named the patient."""
        return "patient.niss" if self.niss is not None else "patient.member.registration_number"


@dataclass(frozen=True)
class ConsultQuery:
    caller: Caller
    patient: PatientKey
    day: dt.date


@dataclass(frozen=True)
class NotifyCommand:
    caller: Caller
    patient: PatientKey
    contact_date: dt.date
    code: str
    supervisor: str | None
    fingerprint: str
    """Of the request without its context: a replay must carry the same content (else 158)."""


@dataclass(frozen=True)
class ListQuery:
    caller: Caller
    year: int
    page_size: int
    after_niss: str


@dataclass(frozen=True)
class EnrolCommand:
    caller: Caller
    iban: str
    bic: str
    holder_name: str
    since: dt.date | None


@dataclass(frozen=True)
class IntakeEvent:
    """A contact (``code`` set) or a 102771 attestation handed in by the back office."""

    kind: str
    """"contact" or "attestation"."""
    reference: str
    niss: str
    provider: str
    on: dt.date
    """The contact date or the attestation date."""
    submitted: dt.date
    fingerprint: str
    code: str = ""
    payee: r.Payee = r.Payee.PATIENT
    """Of a 102771: reimbursed to the patient (paid in cash, the default) or paid to the GP (third party)."""


@dataclass(frozen=True)
class YearEnd:
    year: int
    today: dt.date


# --- parts of requests --------------------------------------------------------------------------------------


def caller(check: Checker, context: context_pb2.RequestContext) -> Caller | None:
    """Formats of the context: requester INAMI, its role, the reference, the processing date."""
    found = check.inami("context.requester_inami", context.requester_inami)
    if (
        found is not None
        and context.requester_role
        and role_from_proto(context.requester_role) is not found.role
    ):
        check.add(
            "context.requester_role",
            McnCode.IDENTIFICATION_INCONSISTENT,
            "role does not match the INAMI competence code",
        )
    if context.organisation_inami:
        check.inami("context.organisation_inami", context.organisation_inami)
    reference = check.text(
        "context.requester_reference", context.requester_reference, max_length=MAX_REFERENCE
    )
    today = check.date("context.processing_date", context.processing_date)
    user = None
    if context.session_user_inami:
        user = check.inami("context.session_user_inami", context.session_user_inami)
    if found is None or today is None or not reference:
        return None
    return Caller(
        found, reference, today, user.value if user is not None else "", context.rejected_invoices_only
    )


_SEXES = {
    common_pb2.SEX_MALE: Sex.MALE,
    common_pb2.SEX_FEMALE: Sex.FEMALE,
    common_pb2.SEX_UNKNOWN: Sex.UNKNOWN,
}


def patient_key(
    check: Checker, selector: common_pb2.PatientSelector, insurer_code: str, field: str = "patient"
) -> PatientKey | None:
    """Format of the patient selector: NISS (100/111/112/113), or mutuality (121, 155) + member number."""
    sex = _SEXES.get(selector.sex)
    which = selector.WhichOneof("identifier")
    if which == "niss":
        niss = check.niss(f"{field}.niss", selector.niss)
        return PatientKey(niss, None, sex) if niss else None
    if which == "member":
        try:
            number = parse_member_number(selector.member.mutuality_code, selector.member.registration_number)
            routed = routing_insurer(number.mutuality_code)
        except IdentifierError as error:
            sub = "mutuality_code" if error.code == McnCode.MUTUALITY_UNKNOWN else "registration_number"
            if error.code == McnCode.MANDATORY_FIELD_MISSING and not selector.member.mutuality_code.strip():
                sub = "mutuality_code"
            check.add(f"{field}.member.{sub}", error.code, error.reason)
            return None
        if routed != insurer_code:
            check.add(
                f"{field}.member.mutuality_code",
                McnCode.ROUTING_INCONSISTENT,
                f"mutuality {number.mutuality_code} is not served by insurer {insurer_code}",
            )
            return None
        return PatientKey(None, number.registration_number, sex)
    check.add(field, McnCode.MANDATORY_FIELD_MISSING, "patient NISS or member number is mandatory")
    return None


_CODE = re.compile(r"^\d{6}$")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def nomenclature(
    check: Checker, code: str, contact_codes: frozenset[str], field: str = "nomenclature_code"
) -> str:
    """Mandatory (100), six digits (111), a consultation or visit code (130)."""
    value = code.strip()
    if not value:
        check.add(field, McnCode.MANDATORY_FIELD_MISSING, "nomenclature code is mandatory")
    elif not _CODE.match(value):
        check.add(field, McnCode.BAD_FORMAT, "nomenclature code must be 6 digits")
    elif value not in contact_codes:
        check.add(field, McnCode.VALUE_NOT_ALLOWED, "not a consultation or visit code")
    return value


def contact_time(check: Checker, value: str, field: str = "contact_time") -> None:
    if value and not _TIME.match(value):
        check.add(field, McnCode.BAD_FORMAT, "contact time must be HH:MM")


_IBAN = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9]{10,30}$")
_BIC = re.compile(r"^[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?$")


def bank_account(check: Checker, account: common_pb2.BankAccount, field: str = "bank_account") -> None:
    """IBAN mandatory with valid ISO 13616 check digits (100/111/112); BIC 8 or 11 characters (111)."""
    iban = account.iban.replace(" ", "").upper()
    if not iban:
        check.add(f"{field}.iban", McnCode.MANDATORY_FIELD_MISSING, "IBAN is mandatory")
    elif not _IBAN.match(iban):
        check.add(f"{field}.iban", McnCode.BAD_FORMAT, "malformed IBAN")
    elif int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 != 1:
        check.add(f"{field}.iban", McnCode.BAD_CHECK_DIGIT, "IBAN check digits do not match")
    if account.bic and not _BIC.match(account.bic.upper()):
        check.add(f"{field}.bic", McnCode.BAD_FORMAT, "BIC must be 8 or 11 characters")
    check.text(f"{field}.holder_name", account.holder_name, max_length=MAX_NAME, required=False)


def periods(check: Checker, raw: Iterable[common_pb2.Period], field: str) -> tuple[Period, ...]:
    """Validated periods: start mandatory (100), dates plausible and end not before start (113)."""
    found: list[Period] = []
    for index, period in enumerate(raw):
        start = check.date(f"{field}[{index}].start", period.start)
        before = len(check.violations)
        end = check.end_date(f"{field}[{index}].end", period.end, start)
        if start is not None and len(check.violations) == before:
            found.append((start, end))
    return tuple(found)


def fingerprint(request: ProtoMessage, *, drop: Sequence[str] = ()) -> str:
    """SHA-256 of a request's content without the fields in ``drop`` (e.g. the context)."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in drop:
        copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def parsed(value: T | None) -> T:
    """A value the checker vouched for: it raised INVALID_ARGUMENT when a field was missing or wrong."""
    if value is None:
        raise RuntimeError("a parsed value is missing although the request had no violation")
    return value


# --- whole requests -----------------------------------------------------------------------------------------


def provider_request(request: Any) -> Any:
    """The provider's request an internal request carries (its field ``request``, as the hub received it),
    or, from a caller that still sends the deprecated copies of its fields, the internal request itself: the
    names of those fields are the provider request's, so both read alike."""
    return request.request if request.HasField("request") else request


def parse_consult(request: oa_pb2.ConsultDmgRequest, insurer_code: str) -> ConsultQuery:
    asked = provider_request(request)
    with Checker() as check:
        who = caller(check, request.context)
        key = patient_key(check, asked.patient, insurer_code)
        day = check.date("request_date", asked.request_date)
    return ConsultQuery(parsed(who), parsed(key), parsed(day))


def parse_notify(
    request: oa_pb2.NotifyDmgRequest, insurer_code: str, contact_codes: frozenset[str]
) -> NotifyCommand:
    asked = provider_request(request)
    with Checker() as check:
        who = caller(check, request.context)
        key = patient_key(check, asked.patient, insurer_code)
        contact = check.date("contact_date", asked.contact_date)
        contact_time(check, asked.contact_time)
        code = nomenclature(check, asked.nomenclature_code, contact_codes)
        supervisor = check.optional_inami("supervisor_inami", asked.supervisor_inami)
    # The idempotency fingerprint is the one of the notification's content in the deprecated form, whichever
    # form it came in: a retry is recognised across both forms, and fingerprints stored before stay valid.
    content = oa_pb2.NotifyDmgRequest(
        patient=asked.patient,
        contact_date=asked.contact_date,
        contact_time=asked.contact_time,
        nomenclature_code=asked.nomenclature_code,
        supervisor_inami=asked.supervisor_inami,
    )
    return NotifyCommand(
        parsed(who),
        parsed(key),
        parsed(contact),
        code,
        supervisor.value if supervisor else None,
        fingerprint(content),
    )


def parse_list(request: oa_pb2.ListHoldingsRequest) -> ListQuery:
    with Checker() as check:
        who = caller(check, request.context)
        size = check.page_size(
            "page_size", request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE
        )
        after = check.page_token("page_token", request.page_token, 1)
    return ListQuery(parsed(who), request.year, size, str(after[0]) if after else "")


def parse_enrol(request: oa_pb2.EnrolDmgRequest) -> EnrolCommand:
    asked = provider_request(request)
    with Checker() as check:
        who = caller(check, request.context)
        bank_account(check, asked.bank_account)
        since = check.optional_date("start_date", asked.start_date)
    account = asked.bank_account
    return EnrolCommand(
        parsed(who),
        account.iban.replace(" ", "").upper(),
        account.bic.upper(),
        account.holder_name.strip(),
        since,
    )


def parse_inami_field(raw: str, field: str) -> str:
    with Checker() as check:
        found = check.inami(field, raw)
    return parsed(found).value


def parse_contact(request: intake_pb2.RegisterContactRequest, contact_codes: frozenset[str]) -> IntakeEvent:
    """A contact: the shared intake fields, the contact date and its code (checked by the rules)."""
    with Checker() as check:
        reference, niss, provider = _intake_head(check, request)
        contact = check.date("contact_date", request.contact_date)
        code = check.text("nomenclature_code", request.nomenclature_code, max_length=32)
        submitted = check.date("submission_date", request.submission_date)
    return IntakeEvent(
        "contact", reference, niss, provider, parsed(contact), parsed(submitted), fingerprint(request), code
    )


def parse_attestation(request: intake_pb2.RegisterPaperAttestationRequest) -> IntakeEvent:
    with Checker() as check:
        reference, niss, provider = _intake_head(check, request)
        attested = check.date("attestation_date", request.attestation_date)
        submitted = check.date("submission_date", request.submission_date)
        method = check.enum("payment_method", request.payment_method, _PAPER_PAYEES, required=False)
    return IntakeEvent(
        "attestation",
        reference,
        niss,
        provider,
        parsed(attested),
        parsed(submitted),
        fingerprint(request),
        payee=method or r.Payee.PATIENT,
    )


_PAPER_PAYEES: dict[int, r.Payee] = {
    intake_pb2.PAPER_PAYMENT_METHOD_CASH: r.Payee.PATIENT,
    intake_pb2.PAPER_PAYMENT_METHOD_THIRD_PARTY: r.Payee.PROVIDER,
}
"""Seed 000 §1.1.1: paid in cash, the 102771 is reimbursed to the patient; in third party, paid to the GP."""


def _intake_head(
    check: Checker,
    request: intake_pb2.RegisterContactRequest | intake_pb2.RegisterPaperAttestationRequest,
) -> tuple[str, str, str]:
    reference = check.text("intake_reference", request.intake_reference, max_length=MAX_REFERENCE)
    niss = check.niss("patient_niss", request.patient_niss)
    provider = check.inami("provider_inami", request.provider_inami)
    return reference, niss, provider.value if provider else ""


def parse_year_end(request: intake_pb2.ProcessYearEndRequest) -> YearEnd:
    with Checker() as check:
        if not request.year:
            check.add("year", McnCode.MANDATORY_FIELD_MISSING, "year is mandatory")
        else:
            check.number("year", request.year, minimum=1900, maximum=2199)
        today = check.date("processing_date", request.processing_date)
    if parsed(today) < dt.date(request.year, 12, 31):
        raise field_error("processing_date", McnCode.DATE_IN_FUTURE, f"year {request.year} is not over")
    return YearEnd(request.year, parsed(today))


# --- checks against the processing date and what the OA knows ----------------------------------------------


def years_back(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def check_consult_date(value: dt.date, today: dt.date, field: str = "request_date") -> None:
    """Today or in the past (146), at most 2 years back (145)."""
    if value > today:
        raise field_error(field, McnCode.DATE_IN_FUTURE, "date in the future")
    if value < years_back(today, CONSULT_MAX_YEARS_BACK):
        raise field_error(field, McnCode.DATE_TOO_OLD, "date more than 2 years in the past")


def check_contact_date(
    value: dt.date, today: dt.date, *, max_days: int | None, field: str = "contact_date"
) -> None:
    """Not in the future (146), at most ``max_days`` back (166)."""
    if value > today:
        raise field_error(field, McnCode.DATE_IN_FUTURE, "contact date in the future")
    if max_days is not None and (today - value).days > max_days:
        raise field_error(field, McnCode.CONTACT_TOO_OLD, f"contact more than {max_days} days ago")


def check_list_year(year: int, today: dt.date, field: str = "year") -> None:
    """The current year or one of the two previous ones (100 / 146 / 145)."""
    if not year:
        raise field_error(field, McnCode.MANDATORY_FIELD_MISSING, "year is mandatory")
    if year > today.year:
        raise field_error(field, McnCode.DATE_IN_FUTURE, "year in the future")
    if year < today.year - LIST_YEARS_BACK:
        raise field_error(field, McnCode.DATE_TOO_OLD, "year more than 2 years in the past")


def check_requester(who: Caller, request: Request, registered: Registration | None) -> None:
    """The requester is known to the OA (141), within the validity the cadastre records for it on the
    processing date (140), registered under the role its number says (156), and entitled to this
    request type (140)."""
    field = "context.requester_inami"
    if registered is None:
        raise field_error(field, McnCode.PROVIDER_UNKNOWN, "provider unknown to this insurer")
    valid_from, valid_until = registered.valid_from, registered.valid_until
    if (valid_from is not None and who.today < valid_from) or (
        valid_until is not None and who.today > valid_until
    ):
        span = f"{valid_from or '…'} to {valid_until or '…'}"
        raise field_error(
            field,
            McnCode.PROVIDER_NOT_ENTITLED,
            f"the cadastre lets this provider practise from {span}, not on {who.today}",
        )
    if registered.role and role_from_proto(registered.role) not in (None, who.inami.role):
        raise field_error(
            field, McnCode.AUTHOR_MISMATCH, "the INAMI number does not match the provider registered under it"
        )
    if who.inami.role not in ENTITLED[request]:
        raise field_error(
            field,
            McnCode.PROVIDER_NOT_ENTITLED,
            f"a {who.inami.role.value} is not entitled to {request.value}",
        )


class Member(Protocol):
    @property
    def niss(self) -> str: ...


M = TypeVar("M", bound=Member)


def check_patient(key: PatientKey, member: M | None, *, periods: Sequence[Period], on: dt.date) -> M:
    """The patient is a member (120 / 122), affiliated on ``on`` (120), of a compatible sex (136); returns
    the member."""
    if member is None:
        if key.niss is not None:
            raise field_error("patient.niss", McnCode.PATIENT_UNKNOWN, "NISS unknown to this insurer")
        raise field_error(
            "patient.member.registration_number",
            McnCode.MEMBER_NUMBER_UNKNOWN,
            "member number unknown to this insurer",
        )
    if not covers(periods, on):
        raise field_error(
            key.field, McnCode.PATIENT_UNKNOWN, f"not affiliated with this insurer on {on.isoformat()}"
        )
    if key.sex is not None and not sex_compatible(parse_niss(member.niss), key.sex):
        raise field_error("patient.sex", McnCode.SEX_INCOMPATIBLE, "sex incompatible with the NISS")
    return member


def already_enrolled(since: dt.date) -> MeshError:
    """168: a GP enrols once and there is no de-enrolment (SPEC §9)."""
    return already_exists(
        "ALREADY_ENROLLED", f"already enrolled since {since.isoformat()}", code=McnCode.ALREADY_ENROLLED
    )
