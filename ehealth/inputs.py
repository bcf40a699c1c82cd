"""eHealth's requests parsed into typed values, on the one validation idiom of the mesh
(:class:`mycarenet_core.validation.Checker`): every field violation of a request is collected with its
MyCareNet code (SPEC §3.5) and raised at once as INVALID_ARGUMENT before anything is read or changed. A
parser returns only when the whole request is valid, so the servicers go proto → parser → domain → proto.

What is eHealth's own lives here (subjects and enterprise numbers, a person's INAMI, periods, the register's
page keys); identifiers, texts, dates, enums, page sizes and page tokens are the core's. Nothing here touches
the database or the clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm

from ehealth.auth import COMPANY, ORGANISATION, PERSON, PROVIDER
from ehealth.mandates import NewMandate
from ehealth.models import MembershipRow, OrganisationRow, ProviderRow
from ehealth.rules import Period, Proof
from ehealth.tokens import MAX_LIFETIME, load_public_key
from mycarenet_core.codes import McnCode
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, cadastre_pb2, mandate_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr_pb2
from mycarenet_core.identifiers import Inami, Profession, Role
from mycarenet_core.validation import Checker, KeyValue

SUBJECT_KINDS: dict[int, str] = {
    auth_pb2.SUBJECT_KIND_PROVIDER: PROVIDER,
    auth_pb2.SUBJECT_KIND_ORGANISATION: ORGANISATION,
    auth_pb2.SUBJECT_KIND_PERSON: PERSON,
    auth_pb2.SUBJECT_KIND_COMPANY: COMPANY,
}
SUBJECT_KIND_BY_NAME = {name: name for name in SUBJECT_KINDS.values()}
ORGANISATION_KINDS: dict[int, Role] = {
    cadastre_pb2.ORGANISATION_KIND_MEDICAL_HOUSE: Role.MEDICAL_HOUSE,
    cadastre_pb2.ORGANISATION_KIND_GROUP_PRACTICE: Role.GROUP_PRACTICE,
    cadastre_pb2.ORGANISATION_KIND_PHARMACY: Role.PHARMACY,
}
REGISTRABLE_PROOFS: dict[int, Proof] = {
    tr_pb2.RELATION_PROOF_EID_READ: Proof.EID_READ,
    tr_pb2.RELATION_PROOF_ISI_PLUS_READ: Proof.ISI_PLUS_READ,
    tr_pb2.RELATION_PROOF_PATIENT_DECLARATION: Proof.PATIENT_DECLARATION,
}
MANDATED_SERVICES: dict[int, str] = {
    value: mandate_pb2.MandatedService.Name(value)
    for value in mandate_pb2.MandatedService.values()
    if value != mandate_pb2.MANDATED_SERVICE_UNSPECIFIED
}
ROLES: dict[int, Role] = {
    value: Role[common_pb2.ProviderRole.Name(value).removeprefix("PROVIDER_ROLE_")]
    for value in common_pb2.ProviderRole.values()
    if value != common_pb2.PROVIDER_ROLE_UNSPECIFIED
}
MAX_AUDIENCE = 128
MAX_NAME = 200
MAX_ID = 64
MAX_TOKEN = 8192
MAX_REFERENCE = 200
MAX_SIGNATURE = 1024
MAX_LIFETIME_SECONDS = int(MAX_LIFETIME.total_seconds())  # 12 h: longer requests are capped
FINGERPRINT_LENGTH = 64


# --- eHealth's own fields, on the core Checker ------------------------------------------------------------


def person_inami(check: Checker, field: str, raw: str) -> Inami | None:
    """An INAMI number of a person (not an organisation): 130 for an organisation."""
    parsed = check.inami(field, raw)
    if parsed is not None and parsed.profession is Profession.ORGANISATION:
        check.add(field, McnCode.VALUE_NOT_ALLOWED, "an organisation number is not allowed here")
        return None
    return parsed


def organisation_inami(check: Checker, field: str, raw: str) -> Inami | None:
    """An INAMI number of an organisation: 130 for a person's."""
    parsed = check.inami(field, raw)
    if parsed is not None and parsed.profession is not Profession.ORGANISATION:
        check.add(field, McnCode.VALUE_NOT_ALLOWED, "not an organisation number")
        return None
    return parsed


def period(
    check: Checker, field: str, value: common_pb2.Period, *, default_start: dt.date | None = None
) -> Period | None:
    """A period with a mandatory start (or ``default_start``) and an optional end not before it."""
    start = check.date(f"{field}.start", value.start, default=default_start)
    end = check.end_date(f"{field}.end", value.end, start)
    return Period(start, end) if start is not None else None


def enterprise_number(check: Checker, field: str, raw: str) -> str:
    """A KBO/BCE enterprise number: 10 digits, the last two = 97 − (first eight mod 97)."""
    value = raw.strip().translate(str.maketrans("", "", ".- "))
    if not value:
        check.add(field, McnCode.MANDATORY_FIELD_MISSING, "enterprise number is missing")
    elif len(value) != 10 or not (value.isascii() and value.isdigit()) or value[0] not in "01":
        check.add(field, McnCode.BAD_FORMAT, "enterprise number must be 10 digits starting with 0 or 1")
    elif 97 - int(value[:8]) % 97 != int(value[8:]):
        check.add(field, McnCode.BAD_CHECK_DIGIT, "enterprise number check digits do not match")
    return value


def subject_id(check: Checker, kind: str | None, field: str, raw: str) -> str:
    """The canonical id of a subject of ``kind`` (INAMI, NISS or enterprise number)."""
    if kind == PROVIDER:
        provider = person_inami(check, field, raw)
        return provider.value if provider else ""
    if kind == ORGANISATION:
        organisation = organisation_inami(check, field, raw)
        return organisation.value if organisation else ""
    if kind == PERSON:
        return check.niss(field, raw)
    if kind == COMPANY:
        return enterprise_number(check, field, raw)
    return ""


def subject(check: Checker, value: auth_pb2.Subject, field: str = "subject") -> tuple[str, str]:
    """(kind, canonical id) of a subject."""
    kind = check.enum(f"{field}.kind", value.kind, SUBJECT_KINDS)
    return kind or "", subject_id(check, kind, f"{field}.id", value.id)


def public_key(check: Checker, field: str, pem: str, *, required: bool) -> str:
    """A PEM public key eHealth can verify signatures with ("" when absent and optional)."""
    if not pem.strip():
        if required:
            check.add(field, McnCode.MANDATORY_FIELD_MISSING, "public key is missing")
        return ""
    if len(pem) > MAX_TOKEN:
        check.add(field, McnCode.BAD_FORMAT, f"at most {MAX_TOKEN} characters")
        return ""
    try:
        load_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as error:  # not Ed25519 (Ed448, X25519, RSA, an odd curve)
        check.add(field, McnCode.VALUE_NOT_ALLOWED, str(error)[:200])
    return pem


def sequence(check: Checker, field: str, value: int) -> int:
    """A position in a log: never negative (130)."""
    if value < 0:
        check.add(field, McnCode.VALUE_NOT_ALLOWED, "a sequence number is never negative")
        return 0
    return value


@dataclass(frozen=True)
class DatedPage:
    """The common part of the list requests ordered by (start date, id)."""

    valid_on: dt.date | None
    size: int
    after: tuple[dt.date, str] | None


def dated_page(check: Checker, valid_on: common_pb2.Date, page_size: int, page_token: str) -> DatedPage:
    day = check.optional_date("valid_on", valid_on)
    size = check.page_size("page_size", page_size)
    key = check.page_token("page_token", page_token, 2)
    after: tuple[dt.date, str] | None = None
    if key is not None:
        try:
            after = (dt.date.fromisoformat(str(key[0])), str(key[1]))
        except ValueError:
            check.add("page_token", McnCode.BAD_FORMAT, "not a page token from a previous answer")
    return DatedPage(day, size, after)


def page_key(start: dt.date, identifier: str) -> list[KeyValue]:
    """The sort key a dated page token carries."""
    return [start.isoformat(), identifier]


@dataclass(frozen=True)
class KeyPage:
    """A page of a list ordered by one string key (INAMI)."""

    size: int
    after: str | None


def key_page(check: Checker, page_size: int, page_token: str) -> KeyPage:
    size = check.page_size("page_size", page_size)
    key = check.page_token("page_token", page_token, 1)
    return KeyPage(size, str(key[0]) if key else None)


# --- auth ------------------------------------------------------------------------------------------------


def challenge_request(request: auth_pb2.CreateChallengeRequest) -> tuple[str, str]:
    """(subject kind, subject id)."""
    with Checker() as check:
        kind, subject_id_ = subject(check, request.subject)
    return kind, subject_id_


@dataclass(frozen=True)
class SessionRequest:
    challenge_id: str
    signature: bytes
    audience: str
    lifetime_seconds: int
    principal_inami: str
    user_challenge_id: str = ""
    user_signature: bytes = b""


def session_request(request: auth_pb2.CreateSessionRequest) -> SessionRequest:
    with Checker() as check:
        challenge_id = check.text("challenge_id", request.challenge_id, max_length=MAX_ID)
        if not request.signature:
            check.add("signature", McnCode.MANDATORY_FIELD_MISSING, "signature is missing")
        elif len(request.signature) > MAX_SIGNATURE:
            check.add("signature", McnCode.BAD_FORMAT, f"at most {MAX_SIGNATURE} bytes")
        audience = check.text("audience", request.audience, max_length=MAX_AUDIENCE, required=False)
        if request.lifetime_seconds < 0:
            check.add("lifetime_seconds", McnCode.VALUE_NOT_ALLOWED, "lifetime cannot be negative")
        principal = check.optional_inami("principal_inami", request.principal_inami)
        user_challenge = check.text(
            "user_challenge_id", request.user_challenge_id, max_length=MAX_ID, required=False
        )
        if len(request.user_signature) > MAX_SIGNATURE:
            check.add("user_signature", McnCode.BAD_FORMAT, f"at most {MAX_SIGNATURE} bytes")
        elif bool(user_challenge) != bool(request.user_signature):
            missing = "user_signature" if user_challenge else "user_challenge_id"
            check.add(
                missing, McnCode.MANDATORY_FIELD_MISSING, "the user's challenge and signature go as one"
            )
    return SessionRequest(
        challenge_id,
        request.signature,
        audience,
        # A lifetime over the maximum is capped (published behaviour): cap it here, where any int64 fits.
        min(request.lifetime_seconds, MAX_LIFETIME_SECONDS),
        principal.value if principal else "",
        user_challenge or "",
        request.user_signature,
    )


def logout_request(request: auth_pb2.LogoutRequest) -> str:
    with Checker() as check:
        token = check.text("token", request.token, max_length=MAX_TOKEN)
    return token


def revocations_request(request: auth_pb2.ListRevocationsRequest) -> tuple[int, int]:
    """(after sequence, page size): the later of ``after_sequence`` and the page token's position."""
    with Checker() as check:
        after = sequence(check, "after_sequence", request.after_sequence)
        size = check.page_size("page_size", request.page_size, default=500, maximum=5000)
        key = check.page_token("page_token", request.page_token, 1)
        if key is not None and not (isinstance(key[0], int) and key[0] >= 0):
            check.add("page_token", McnCode.BAD_FORMAT, "not a page token from a previous answer")
            key = None
    return (max(after, int(key[0])) if key else after), size


def credential_request(request: auth_pb2.RegisterCredentialRequest) -> tuple[str, str, str]:
    """(subject kind, subject id, PEM)."""
    with Checker() as check:
        kind, subject_id_ = subject(check, request.subject)
        pem = public_key(check, "public_key_pem", request.public_key_pem, required=True)
    return kind, subject_id_, pem


def revoke_credential_request(request: auth_pb2.RevokeCredentialRequest) -> tuple[str, str, str]:
    """(subject kind, subject id, fingerprint or "" for the registered key)."""
    with Checker() as check:
        kind, subject_id_ = subject(check, request.subject)
        fingerprint = request.fingerprint.strip().lower()
        if fingerprint and not (
            len(fingerprint) == FINGERPRINT_LENGTH and all(c in "0123456789abcdef" for c in fingerprint)
        ):
            check.add("fingerprint", McnCode.BAD_FORMAT, "a fingerprint is 64 hexadecimal characters")
    return kind, subject_id_, fingerprint


# --- cadastre --------------------------------------------------------------------------------------------


def provider_request(value: cadastre_pb2.CadastreProvider) -> tuple[ProviderRow, str]:
    """The provider's row and its public key ("" when none is given)."""
    with Checker() as check:
        inami = person_inami(check, "provider.inami", value.inami)
        niss = check.niss("provider.niss", value.niss)
        first_name = check.text("provider.first_name", value.first_name, max_length=MAX_NAME)
        last_name = check.text("provider.last_name", value.last_name, max_length=MAX_NAME)
        validity = period(check, "provider.validity", value.validity)
        supervisor = check.optional_inami("provider.supervisor_inami", value.supervisor_inami)
        if inami is not None and inami.role is Role.GP_IN_TRAINING and not value.supervisor_inami.strip():
            check.add(
                "provider.supervisor_inami", McnCode.MANDATORY_FIELD_MISSING, "a GP in training needs one"
            )
        if supervisor is not None and supervisor.role is not Role.GENERAL_PRACTITIONER:
            check.add("provider.supervisor_inami", McnCode.VALUE_NOT_ALLOWED, "the supervisor is not a GP")
        if supervisor is not None and inami is not None and inami.role is not Role.GP_IN_TRAINING:
            check.add("provider.supervisor_inami", McnCode.VALUE_NOT_ALLOWED, "only a GP in training has one")
        pem = public_key(check, "provider.public_key_pem", value.public_key_pem, required=False)
    assert inami is not None
    assert validity is not None
    row = ProviderRow(
        inami=inami.value,
        niss=niss,
        first_name=first_name,
        last_name=last_name,
        role=inami.role.value,
        valid_from=validity.start,
        valid_to=validity.end,
        supervisor_inami=supervisor.value if supervisor else None,
    )
    return row, pem


def organisation_request(value: cadastre_pb2.Organisation) -> tuple[OrganisationRow, list[MembershipRow]]:
    """The organisation's row and its whole membership."""
    with Checker() as check:
        inami = organisation_inami(check, "organisation.inami", value.inami)
        role = inami.role if inami is not None else None
        if value.kind != cadastre_pb2.ORGANISATION_KIND_UNSPECIFIED:
            kind = check.enum("organisation.kind", value.kind, ORGANISATION_KINDS)
            if kind is not None and role is not None and kind is not role:
                check.add(
                    "organisation.kind",
                    McnCode.IDENTIFICATION_INCONSISTENT,
                    "the kind does not match the INAMI competence (100 medical house, 200 group practice)",
                )
        name = check.text("organisation.name", value.name, max_length=MAX_NAME)
        validity = period(check, "organisation.validity", value.validity)
        check.items("organisation.members", value.members, maximum=10_000)
        members: list[MembershipRow] = []
        for i, member in enumerate(value.members):
            field = f"organisation.members[{i}]"
            member_inami = person_inami(check, f"{field}.inami", member.inami)
            span = period(check, f"{field}.period", member.period)
            if member_inami is not None and span is not None and inami is not None:
                members.append(
                    MembershipRow(
                        organisation_inami=inami.value,
                        member_inami=member_inami.value,
                        valid_from=span.start,
                        valid_to=span.end,
                    )
                )
    assert inami is not None
    assert role is not None
    assert validity is not None
    row = OrganisationRow(
        inami=inami.value, kind=role.value, name=name, valid_from=validity.start, valid_to=validity.end
    )
    return row, members


def lookup_inami(raw: str) -> str:
    """The canonical INAMI of a Get request."""
    with Checker() as check:
        inami = check.inami("inami", raw)
    assert inami is not None
    return inami.value


def providers_request(request: cadastre_pb2.ListProvidersRequest) -> tuple[Role | None, KeyPage]:
    with Checker() as check:
        page = key_page(check, request.page_size, request.page_token)
        role = check.enum("role", request.role, ROLES, required=False)
    return role, page


def organisations_request(request: cadastre_pb2.ListOrganisationsRequest) -> tuple[Role | None, KeyPage]:
    with Checker() as check:
        page = key_page(check, request.page_size, request.page_token)
        kind = check.enum("kind", request.kind, ORGANISATION_KINDS, required=False)
    return kind, page


def cadastre_changes_request(request: cadastre_pb2.ListCadastreChangesRequest) -> tuple[int, int]:
    """(after sequence, page size)."""
    with Checker() as check:
        after = sequence(check, "after_sequence", request.after_sequence)
        size = check.page_size("page_size", request.page_size, default=500, maximum=5000)
    return after, size


def watch_request(
    request: auth_pb2.WatchRevocationsRequest
    | cadastre_pb2.WatchCadastreChangesRequest
    | tr_pb2.WatchRelationChangesRequest,
) -> int:
    """The position a watch starts after."""
    with Checker() as check:
        after = sequence(check, "after_sequence", request.after_sequence)
    return after


# --- therapeutic relations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewRelation:
    provider_inami: str
    patient_niss: str
    proof: Proof
    period: Period


def register_request(request: tr_pb2.RegisterRelationRequest, today: dt.date) -> NewRelation:
    with Checker() as check:
        provider = check.inami("provider_inami", request.provider_inami)
        patient = check.niss("patient_niss", request.patient_niss)
        proof: Proof | None = None
        if request.proof == tr_pb2.RELATION_PROOF_DMG:
            check.add("proof", McnCode.VALUE_NOT_ALLOWED, "the DMG proof is set by the system only")
        else:
            proof = check.enum("proof", request.proof, REGISTRABLE_PROOFS)
        start = check.date("start_date", request.start_date, default=today)
        end = check.end_date("end_date", request.end_date, start)
    assert provider is not None
    assert proof is not None
    assert start is not None
    return NewRelation(provider.value, patient, proof, Period(start, end))


def _revoke(check: Checker, field: str, identifier: str, end: common_pb2.Date) -> tuple[str, dt.date | None]:
    return check.text(field, identifier, max_length=MAX_ID), check.optional_date("end_date", end)


def revoke_relation_request(request: tr_pb2.RevokeRelationRequest) -> tuple[str, dt.date | None]:
    """(relation id, the last day or None for today)."""
    with Checker() as check:
        relation_id, end = _revoke(check, "relation_id", request.relation_id, request.end_date)
    return relation_id, end


def revoke_mandate_request(request: mandate_pb2.RevokeMandateRequest) -> tuple[str, dt.date | None]:
    """(mandate id, the last day or None for today)."""
    with Checker() as check:
        mandate_id, end = _revoke(check, "mandate_id", request.mandate_id, request.end_date)
    return mandate_id, end


def check_request(request: tr_pb2.CheckRelationRequest) -> tuple[str, str, dt.date | None]:
    """(provider INAMI, patient NISS, the day or None for today)."""
    with Checker() as check:
        provider = check.inami("provider_inami", request.provider_inami)
        patient = check.niss("patient_niss", request.patient_niss)
        day = check.optional_date("date", request.date)
    assert provider is not None
    return provider.value, patient, day


@dataclass(frozen=True)
class RelationSearch:
    provider_inami: str
    patient_niss: str
    page: DatedPage


def relations_request(request: tr_pb2.ListRelationsRequest, *, restricted: bool) -> RelationSearch:
    """A provider's session lists its own relations by default; anyone else names a provider or a patient."""
    with Checker() as check:
        provider = check.optional_inami("provider_inami", request.provider_inami)
        patient = check.optional_niss("patient_niss", request.patient_niss)
        given = request.provider_inami.strip() or request.patient_niss.strip()
        if not given and not restricted:
            check.add(
                "provider_inami", McnCode.MANDATORY_FIELD_MISSING, "give a provider, a patient, or both"
            )
        page = dated_page(check, request.valid_on, request.page_size, request.page_token)
    return RelationSearch(provider.value if provider else "", patient, page)


@dataclass(frozen=True)
class DmgMove:
    """A move of a patient's DMG relation: to ``new_holder`` from ``start`` ("" = the previous holder's
    relation only ends), idempotent by ``source_reference``."""

    patient_niss: str
    new_holder: str
    previous_holder: str
    start: dt.date
    source_reference: str
    until: dt.date | None = None
    """The last day of the new holder's holding: the relation ends then (None: open)."""


def transfer_request(request: tr_pb2.TransferDmgRelationRequest) -> DmgMove:
    with Checker() as check:
        patient = check.niss("patient_niss", request.patient_niss)
        new_holder = check.inami("new_holder_inami", request.new_holder_inami)
        previous = check.optional_inami("previous_holder_inami", request.previous_holder_inami)
        start = check.date("start_date", request.start_date)
        reference = check.text("source_reference", request.source_reference, max_length=MAX_REFERENCE)
        if new_holder is not None and previous is not None and new_holder.value == previous.value:
            check.add("previous_holder_inami", McnCode.VALUE_NOT_ALLOWED, "same as the new holder")
    assert new_holder is not None
    assert start is not None
    return DmgMove(patient, new_holder.value, previous.value if previous else "", start, reference)


def relation_changes_request(request: tr_pb2.ListRelationChangesRequest) -> tuple[int, int]:
    """(after sequence, page size: default 1000, at most 10 000)."""
    with Checker() as check:
        after = sequence(check, "after_sequence", request.after_sequence)
        size = check.page_size("page_size", request.page_size, default=1000, maximum=10_000)
    return after, size


# --- mandates ------------------------------------------------------------------------------------------


def new_mandate(value: mandate_pb2.Mandate) -> NewMandate:
    with Checker() as check:
        principal = check.inami("mandate.principal_inami", value.principal_inami)
        kind: str | None = None
        if not value.mandatee_kind.strip():
            check.add("mandate.mandatee_kind", McnCode.MANDATORY_FIELD_MISSING, "mandatee kind is missing")
        else:
            kind = SUBJECT_KIND_BY_NAME.get(value.mandatee_kind.strip())
            if kind is None:
                check.add("mandate.mandatee_kind", McnCode.VALUE_NOT_ALLOWED, "not a SubjectKind name")
        mandatee = subject_id(check, kind, "mandate.mandatee_id", value.mandatee_id)
        if principal is not None and mandatee == principal.value:
            check.add("mandate.mandatee_id", McnCode.VALUE_NOT_ALLOWED, "a principal cannot mandate itself")
        services: set[str] = set()
        if check.items("mandate.services", value.services, maximum=64, required=True):
            for i, service in enumerate(value.services):
                name = check.enum(f"mandate.services[{i}]", service, MANDATED_SERVICES)
                if name is not None:
                    services.add(name)
        span = period(check, "mandate.period", value.period)
    assert principal is not None
    assert kind is not None
    assert span is not None
    return NewMandate(principal.value, kind, mandatee, frozenset(services), span)


@dataclass(frozen=True)
class MandateSearch:
    principal_inami: str
    mandatee_id: str
    page: DatedPage


def mandates_request(request: mandate_pb2.ListMandatesRequest) -> MandateSearch:
    with Checker() as check:
        principal = check.optional_inami("principal_inami", request.principal_inami)
        mandatee = check.text("mandatee_id", request.mandatee_id, max_length=32, required=False)
        page = dated_page(check, request.valid_on, request.page_size, request.page_token)
    return MandateSearch(principal.value if principal else "", mandatee, page)


CESSATION_CAUSES: dict[int, str] = {
    value: mandate_pb2.CessationCause.Name(value)
    for value in mandate_pb2.CessationCause.values()
    if value != mandate_pb2.CESSATION_CAUSE_UNSPECIFIED
}


def cessation_request(request: mandate_pb2.EndMandatesOnCessationRequest) -> tuple[str, dt.date | None]:
    """(subject id, the day or None for today). The subject is an INAMI number or a NISS (11 digits) or an
    enterprise number (10 digits), as mandates store them: digits only. The cause is required (the
    authentic source's fact) and checked; every cause has the same effect."""
    with Checker() as check:
        raw = request.subject_id.strip().translate(str.maketrans("", "", ".-/ "))
        subject = raw
        if not raw:
            check.add("subject_id", McnCode.MANDATORY_FIELD_MISSING, "subject id is missing")
        elif len(raw) == 10:
            subject = enterprise_number(check, "subject_id", raw)
        elif len(raw) != 11 or not (raw.isascii() and raw.isdigit()):
            check.add(
                "subject_id",
                McnCode.BAD_FORMAT,
                "an INAMI number or NISS (11 digits), or an enterprise number (10)",
            )
        check.enum("cause", request.cause, CESSATION_CAUSES, required=True)
        day = check.optional_date("date", request.date)
    return subject, day
