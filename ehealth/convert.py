"""Proto ↔ domain: validated inputs out of requests (INVALID_ARGUMENT with every violation, nothing
changed) and messages out of rows. No database, no clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from ehealth.auth import COMPANY, ORGANISATION, PERSON, PROVIDER
from ehealth.cadastre import CadastreChange, OrganisationRecord, ProviderRecord
from ehealth.inputs import Checker
from ehealth.mandates import MandateRecord, NewMandate
from ehealth.models import MembershipRow, OrganisationRow, ProviderRow, RelationRow, SigningKeyRow
from ehealth.rules import Period, Proof
from ehealth.tokens import ALGORITHM, load_public_key
from mycarenet_core import dates
from mycarenet_core.errors import McnCode
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2,
    cadastre_pb2,
    mandate_pb2,
    therapeutic_relation_pb2,
)
from mycarenet_core.identifiers import Profession, Role

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
}
REGISTRABLE_PROOFS: dict[int, Proof] = {
    therapeutic_relation_pb2.RELATION_PROOF_EID_READ: Proof.EID_READ,
    therapeutic_relation_pb2.RELATION_PROOF_ISI_PLUS_READ: Proof.ISI_PLUS_READ,
    therapeutic_relation_pb2.RELATION_PROOF_PATIENT_DECLARATION: Proof.PATIENT_DECLARATION,
}
MANDATED_SERVICES: dict[int, str] = {
    value: mandate_pb2.MandatedService.Name(value)
    for value in mandate_pb2.MandatedService.values()
    if value != mandate_pb2.MANDATED_SERVICE_UNSPECIFIED
}
MAX_AUDIENCE = 128


def role_to_proto(role: str) -> common_pb2.ProviderRole.ValueType:
    return common_pb2.ProviderRole.Value(f"PROVIDER_ROLE_{Role(role).name}")


def role_from_proto(value: common_pb2.ProviderRole.ValueType) -> Role | None:
    """The role filter of a list request; None for unspecified."""
    if value == common_pb2.PROVIDER_ROLE_UNSPECIFIED:
        return None
    return Role[common_pb2.ProviderRole.Name(value).removeprefix("PROVIDER_ROLE_")]


def timestamp(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC).replace(tzinfo=None))
    return stamp


def period_to_proto(start: dt.date, end: dt.date | None) -> common_pb2.Period:
    return common_pb2.Period(start=dates.to_proto(start), end=dates.to_proto(end))


def _enterprise_number(check: Checker, field: str, raw: str) -> str:
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
        parsed = check.person_inami(field, raw)
        return parsed.value if parsed else ""
    if kind == ORGANISATION:
        parsed = check.inami(field, raw)
        if parsed is not None and parsed.profession is not Profession.ORGANISATION:
            check.add(field, McnCode.VALUE_NOT_ALLOWED, "not an organisation number")
        return parsed.value if parsed else ""
    if kind == PERSON:
        return check.niss(field, raw)
    if kind == COMPANY:
        return _enterprise_number(check, field, raw)
    return ""


def subject(check: Checker, value: auth_pb2.Subject, field: str = "subject") -> tuple[str, str]:
    kind = check.enum(f"{field}.kind", value.kind, SUBJECT_KINDS)
    return kind or "", subject_id(check, kind, f"{field}.id", value.id)


def public_key(check: Checker, field: str, pem: str, *, required: bool) -> str:
    if not pem.strip():
        if required:
            check.add(field, McnCode.MANDATORY_FIELD_MISSING, "public key is missing")
        return ""
    try:
        load_public_key(pem)
    except ValueError as error:
        check.add(field, McnCode.VALUE_NOT_ALLOWED, str(error))
    return pem


# --- auth -------------------------------------------------------------------------------------------------


KEY_STATES: dict[str, auth_pb2.SigningKeyState.ValueType] = {
    "NEXT": auth_pb2.SIGNING_KEY_STATE_NEXT,
    "CURRENT": auth_pb2.SIGNING_KEY_STATE_CURRENT,
    "RETIRED": auth_pb2.SIGNING_KEY_STATE_RETIRED,
}


def signing_key_to_proto(row: SigningKeyRow) -> auth_pb2.SigningKey:
    key = auth_pb2.SigningKey(
        key_id=row.key_id,
        algorithm=ALGORITHM,
        public_key_pem=row.public_key_pem,
        create_time=timestamp(row.create_time),
        state=KEY_STATES.get(row.state, auth_pb2.SIGNING_KEY_STATE_UNSPECIFIED),
    )
    if row.retire_time is not None:
        key.retire_time.CopyFrom(timestamp(row.retire_time))
    return key


def session_request(request: auth_pb2.CreateSessionRequest) -> tuple[str, bytes, str, int, str]:
    """challenge id, signature, audience, lifetime seconds, principal INAMI (validated)."""
    check = Checker()
    challenge_id = check.text("challenge_id", request.challenge_id, max_length=64)
    if not request.signature:
        check.add("signature", McnCode.MANDATORY_FIELD_MISSING, "signature is missing")
    audience = request.audience.strip()
    if len(audience) > MAX_AUDIENCE:
        check.add("audience", McnCode.BAD_FORMAT, f"at most {MAX_AUDIENCE} characters")
    if request.lifetime_seconds < 0:
        check.add("lifetime_seconds", McnCode.VALUE_NOT_ALLOWED, "lifetime cannot be negative")
    principal = check.optional_inami("principal_inami", request.principal_inami)
    check.done()
    principal_inami = principal.value if principal else ""
    return challenge_id, request.signature, audience, request.lifetime_seconds, principal_inami


# --- cadastre --------------------------------------------------------------------------------------------


def provider_request(value: cadastre_pb2.CadastreProvider) -> tuple[ProviderRow, str]:
    check = Checker()
    inami = check.person_inami("provider.inami", value.inami)
    niss = check.niss("provider.niss", value.niss)
    first_name = check.text("provider.first_name", value.first_name)
    last_name = check.text("provider.last_name", value.last_name)
    validity = check.period("provider.validity", value.validity)
    supervisor = check.optional_inami("provider.supervisor_inami", value.supervisor_inami)
    if inami is not None and inami.role is Role.GP_IN_TRAINING and not value.supervisor_inami.strip():
        check.add("provider.supervisor_inami", McnCode.MANDATORY_FIELD_MISSING, "a GP in training needs one")
    if supervisor is not None and supervisor.role is not Role.GENERAL_PRACTITIONER:
        check.add("provider.supervisor_inami", McnCode.VALUE_NOT_ALLOWED, "the supervisor is not a GP")
    if supervisor is not None and inami is not None and inami.role is not Role.GP_IN_TRAINING:
        check.add("provider.supervisor_inami", McnCode.VALUE_NOT_ALLOWED, "only a GP in training has one")
    pem = public_key(check, "provider.public_key_pem", value.public_key_pem, required=False)
    check.done()
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


def change_to_proto(change: CadastreChange) -> cadastre_pb2.CadastreChange:
    """A change of the log as a follower sees it: never a NISS, never a key."""
    assert change.row.sequence is not None
    message = cadastre_pb2.CadastreChange(
        sequence=change.row.sequence, change_time=timestamp(change.row.change_time)
    )
    if change.provider is not None:
        provider = provider_to_proto(change.provider)
        provider.ClearField("niss")
        provider.ClearField("public_key_pem")
        message.provider.CopyFrom(provider)
    elif change.organisation is not None:
        message.organisation.CopyFrom(organisation_to_proto(change.organisation))
    return message


def provider_to_proto(record: ProviderRecord) -> cadastre_pb2.CadastreProvider:
    row = record.row
    return cadastre_pb2.CadastreProvider(
        inami=row.inami,
        niss=row.niss,
        first_name=row.first_name,
        last_name=row.last_name,
        role=role_to_proto(row.role),
        validity=period_to_proto(row.valid_from, row.valid_to),
        supervisor_inami=row.supervisor_inami or "",
        public_key_pem=record.public_key_pem,
    )


def organisation_request(value: cadastre_pb2.Organisation) -> tuple[OrganisationRow, list[MembershipRow]]:
    check = Checker()
    inami = check.inami("organisation.inami", value.inami)
    role = inami.role if inami is not None else None
    if inami is not None and inami.profession is not Profession.ORGANISATION:
        check.add("organisation.inami", McnCode.VALUE_NOT_ALLOWED, "not an organisation number")
    if value.kind != cadastre_pb2.ORGANISATION_KIND_UNSPECIFIED:
        kind = check.enum("organisation.kind", value.kind, ORGANISATION_KINDS)
        if kind is not None and role is not None and kind is not role:
            check.add(
                "organisation.kind",
                McnCode.IDENTIFICATION_INCONSISTENT,
                "the kind does not match the INAMI competence (100 medical house, 200 group practice)",
            )
    name = check.text("organisation.name", value.name)
    validity = check.period("organisation.validity", value.validity)
    members: list[MembershipRow] = []
    for i, member in enumerate(value.members):
        field = f"organisation.members[{i}]"
        member_inami = check.person_inami(f"{field}.inami", member.inami)
        period = check.period(f"{field}.period", member.period)
        if member_inami is not None and period is not None and inami is not None:
            members.append(
                MembershipRow(
                    organisation_inami=inami.value,
                    member_inami=member_inami.value,
                    valid_from=period.start,
                    valid_to=period.end,
                )
            )
    check.done()
    assert inami is not None
    assert role is not None
    assert validity is not None
    row = OrganisationRow(
        inami=inami.value, kind=role.value, name=name, valid_from=validity.start, valid_to=validity.end
    )
    return row, members


def organisation_to_proto(record: OrganisationRecord) -> cadastre_pb2.Organisation:
    row = record.row
    kind = next(k for k, role in ORGANISATION_KINDS.items() if role.value == row.kind)
    return cadastre_pb2.Organisation(
        inami=row.inami,
        kind=kind,  # type: ignore[arg-type]
        name=row.name,
        validity=period_to_proto(row.valid_from, row.valid_to),
        members=[
            cadastre_pb2.OrganisationMember(
                inami=m.member_inami, period=period_to_proto(m.valid_from, m.valid_to)
            )
            for m in record.members
        ],
    )


def lookup_inami(raw: str) -> str:
    """The canonical INAMI of a Get request."""
    check = Checker()
    inami = check.inami("inami", raw)
    check.done()
    assert inami is not None
    return inami.value


# --- therapeutic relations ------------------------------------------------------------------------------


def relation_to_proto(row: RelationRow) -> therapeutic_relation_pb2.TherapeuticRelation:
    return therapeutic_relation_pb2.TherapeuticRelation(
        relation_id=row.relation_id,
        provider_inami=row.provider_inami,
        patient_niss=row.patient_niss,
        proof=therapeutic_relation_pb2.RelationProof.Value(row.proof),
        period=period_to_proto(row.valid_from, row.valid_to),
    )


def register_request(
    request: therapeutic_relation_pb2.RegisterRelationRequest, today: dt.date
) -> tuple[str, str, Proof, Period]:
    check = Checker()
    provider = check.inami("provider_inami", request.provider_inami)
    patient = check.niss("patient_niss", request.patient_niss)
    if request.proof == therapeutic_relation_pb2.RELATION_PROOF_DMG:
        check.add("proof", McnCode.VALUE_NOT_ALLOWED, "the DMG proof is set by the system only")
        proof = None
    else:
        proof = check.enum("proof", request.proof, REGISTRABLE_PROOFS)
    start = check.date("start_date", request.start_date, default=today)
    end = check.end_date("end_date", request.end_date, start)
    check.done()
    assert provider is not None
    assert proof is not None
    assert start is not None
    return provider.value, patient, proof, Period(start, end)


def check_request(request: therapeutic_relation_pb2.CheckRelationRequest) -> tuple[str, str, dt.date | None]:
    check = Checker()
    provider = check.inami("provider_inami", request.provider_inami)
    patient = check.niss("patient_niss", request.patient_niss)
    day = check.optional_date("date", request.date)
    check.done()
    assert provider is not None
    return provider.value, patient, day


def transfer_request(
    request: therapeutic_relation_pb2.TransferDmgRelationRequest,
) -> tuple[str, str, str, dt.date, str]:
    check = Checker()
    patient = check.niss("patient_niss", request.patient_niss)
    new_holder = check.inami("new_holder_inami", request.new_holder_inami)
    previous = check.optional_inami("previous_holder_inami", request.previous_holder_inami)
    start = check.date("start_date", request.start_date)
    reference = check.text("source_reference", request.source_reference)
    if new_holder is not None and previous is not None and new_holder.value == previous.value:
        check.add("previous_holder_inami", McnCode.VALUE_NOT_ALLOWED, "same as the new holder")
    check.done()
    assert new_holder is not None
    assert start is not None
    return patient, new_holder.value, previous.value if previous else "", start, reference


def list_filters(
    check: Checker, valid_on: common_pb2.Date, page_size: int, page_token: str
) -> tuple[dt.date | None, int, tuple[dt.date, str] | None]:
    """The common part of the list requests ordered by (start date, id)."""
    day = check.optional_date("valid_on", valid_on)
    size = check.page_size("page_size", page_size)
    key = check.page_token("page_token", page_token, 2)
    after: tuple[dt.date, str] | None = None
    if key is not None:
        try:
            after = (dt.date.fromisoformat(str(key[0])), str(key[1]))
        except ValueError:
            check.add("page_token", McnCode.BAD_FORMAT, "not a page token from a previous answer")
    return day, size, after


# --- mandates -------------------------------------------------------------------------------------------


def mandate_to_proto(record: MandateRecord) -> mandate_pb2.Mandate:
    row = record.row
    return mandate_pb2.Mandate(
        mandate_id=row.mandate_id,
        principal_inami=row.principal_inami,
        mandatee_kind=row.mandatee_kind,
        mandatee_id=row.mandatee_id,
        services=[mandate_pb2.MandatedService.Value(s) for s in record.services],
        period=period_to_proto(row.valid_from, row.valid_to),
    )


def new_mandate(value: mandate_pb2.Mandate) -> NewMandate:
    check = Checker()
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
    if not value.services:
        check.add("mandate.services", McnCode.MANDATORY_FIELD_MISSING, "at least one service")
    for i, service in enumerate(value.services):
        name = check.enum(f"mandate.services[{i}]", service, MANDATED_SERVICES)
        if name is not None:
            services.add(name)
    period = check.period("mandate.period", value.period)
    check.done()
    assert principal is not None
    assert kind is not None
    assert period is not None
    return NewMandate(principal.value, kind, mandatee, frozenset(services), period)


def page_key(start: dt.date, identifier: str) -> Sequence[str]:
    return (start.isoformat(), identifier)
