"""Domain → proto: the messages eHealth answers, out of its rows and records. (Requests are parsed in
:mod:`ehealth.inputs`.) No database, no clock."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from ehealth.cadastre import CadastreChange, OrganisationRecord, ProviderRecord
from ehealth.inputs import ORGANISATION_KINDS
from ehealth.mandates import MandateRecord
from ehealth.models import RevocationRow, SigningKeyRow
from ehealth.relations import RelationChange, RelationLike
from ehealth.tokens import ALGORITHM
from mycarenet_core import dates
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2,
    cadastre_pb2,
    mandate_pb2,
    therapeutic_relation_pb2,
)
from mycarenet_core.identifiers import Role


def role_to_proto(role: str) -> common_pb2.ProviderRole.ValueType:
    return common_pb2.ProviderRole.Value(f"PROVIDER_ROLE_{Role(role).name}")


def timestamp(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC).replace(tzinfo=None))
    return stamp


def period_to_proto(start: dt.date, end: dt.date | None) -> common_pb2.Period:
    return common_pb2.Period(start=dates.to_proto(start), end=dates.to_proto(end))


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


# --- cadastre --------------------------------------------------------------------------------------------


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


# --- therapeutic relations ------------------------------------------------------------------------------


PROOFS: dict[str, therapeutic_relation_pb2.RelationProof.ValueType] = {
    name: value for name, value in therapeutic_relation_pb2.RelationProof.items()
}


def relation_to_proto(row: RelationLike) -> therapeutic_relation_pb2.TherapeuticRelation:
    end = row.valid_to
    return therapeutic_relation_pb2.TherapeuticRelation(
        relation_id=row.relation_id,
        provider_inami=row.provider_inami,
        patient_niss=row.patient_niss,
        proof=PROOFS[row.proof],
        period=common_pb2.Period(
            start=common_pb2.Date(
                year=row.valid_from.year, month=row.valid_from.month, day=row.valid_from.day
            ),
            end=None if end is None else common_pb2.Date(year=end.year, month=end.month, day=end.day),
        ),
    )


def relation_change_to_proto(change: RelationChange) -> therapeutic_relation_pb2.RelationChange:
    return therapeutic_relation_pb2.RelationChange(
        sequence=change.sequence,
        change_time=timestamp(change.change_time),
        relation=relation_to_proto(change),
    )


def revocation_to_proto(row: RevocationRow) -> auth_pb2.Revocation:
    return auth_pb2.Revocation(
        sequence=row.sequence or 0,
        session_id=row.session_id,
        revoke_time=timestamp(row.revoke_time),
        expire_time=timestamp(row.expire_time),
    )


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
