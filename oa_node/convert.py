"""Mapping between the OA's domain (rows, rule dataclasses) and the protos."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

from google.protobuf import timestamp_pb2

from mycarenet_core import dates
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.identifiers import IdentifierError, Role, parse_inami
from oa_node import rules as r

Names = dict[str, tuple[int, str, str]]
"""INAMI -> (proto role, first name, last name) of the providers and organisations known to the OA."""


def role_to_proto(role: Role) -> common_pb2.ProviderRole.ValueType:
    return common_pb2.ProviderRole.Value(f"PROVIDER_ROLE_{role.name}")


_ROLES: dict[int, Role] = {int(role_to_proto(role)): role for role in Role}


def role_from_proto(value: int) -> Role | None:
    """The role of a proto value; None for UNSPECIFIED or an unknown value."""
    return _ROLES.get(value)


def role_of(inami: str) -> int:
    """The proto role encoded in an INAMI number (UNSPECIFIED when it does not parse)."""
    try:
        return role_to_proto(parse_inami(inami).role)
    except IdentifierError:
        return common_pb2.PROVIDER_ROLE_UNSPECIFIED


def names_of(providers: Mapping[str, Any], organisations: Mapping[str, Any]) -> Names:
    """Who the INAMI numbers are (providers' and organisations' rows; an organisation's wins)."""
    names: Names = {p.inami: (p.role, p.first_name, p.last_name) for p in providers.values()}
    names.update({o.inami: (o.role, "", o.name) for o in organisations.values()})
    return names


def provider(inami: str | None, names: Names) -> common_pb2.Provider | None:
    if not inami:
        return None
    known = names.get(inami)
    role, first, last = known if known is not None else (0, "", "")
    return common_pb2.Provider(inami=inami, role=role or role_of(inami), first_name=first, last_name=last)  # type: ignore[arg-type]


def period(start: dt.date, end: dt.date | None) -> common_pb2.Period:
    return common_pb2.Period(start=dates.to_proto(start), end=dates.to_proto(end))


class PatientFields(Protocol):
    """What a patient proto is made of (a member row, or the consult's view of one)."""

    @property
    def niss(self) -> str: ...
    @property
    def first_name(self) -> str: ...
    @property
    def last_name(self) -> str: ...
    @property
    def birth_date(self) -> dt.date | None: ...
    @property
    def sex(self) -> int: ...
    @property
    def mutuality_code(self) -> str: ...
    @property
    def registration_number(self) -> str: ...
    @property
    def death_date(self) -> dt.date | None: ...


def patient(member: PatientFields) -> common_pb2.Patient:
    return common_pb2.Patient(
        niss=member.niss,
        first_name=member.first_name,
        last_name=member.last_name,
        birth_date=dates.to_proto(member.birth_date),
        sex=member.sex,  # type: ignore[arg-type]
        member=common_pb2.MemberNumber(
            mutuality_code=member.mutuality_code, registration_number=member.registration_number
        ),
        death_date=dates.to_proto(member.death_date),
    )


_PROCEDURES = {
    r.Procedure.ELECTRONIC: dmg_pb2.PROCEDURE_ELECTRONIC,
    r.Procedure.PAPER: dmg_pb2.PROCEDURE_PAPER,
}
_KINDS = {
    r.PaymentKind.NOTIFICATION: dmg_pb2.PAYMENT_KIND_NOTIFICATION,
    r.PaymentKind.ACCELERATED_PROLONGATION: dmg_pb2.PAYMENT_KIND_ACCELERATED_PROLONGATION,
    r.PaymentKind.PAPER_ATTESTATION: dmg_pb2.PAYMENT_KIND_PAPER_ATTESTATION,
    r.PaymentKind.ADMINISTRATIVE_PROLONGATION: dmg_pb2.PAYMENT_KIND_ADMINISTRATIVE_PROLONGATION,
}
INDICATORS = {
    r.PaymentIndicator.WITH_PAYMENT: dmg_pb2.PAYMENT_INDICATOR_WITH_PAYMENT,
    r.PaymentIndicator.WITHOUT_PAYMENT: dmg_pb2.PAYMENT_INDICATOR_WITHOUT_PAYMENT,
}


def holding(h: r.Holding, names: Names, *, today: dt.date) -> dmg_pb2.DmgHolding:
    """A holding as it stands ``today`` (an active holding past its end is EXPIRED)."""
    if h.status is r.HoldingStatus.CANCELLED:
        status = dmg_pb2.HOLDING_STATUS_CANCELLED
    elif h.status is r.HoldingStatus.CLOSED:
        status = dmg_pb2.HOLDING_STATUS_CLOSED
    else:
        status = dmg_pb2.HOLDING_STATUS_EXPIRED if h.end < today else dmg_pb2.HOLDING_STATUS_ACTIVE
    return dmg_pb2.DmgHolding(
        holder=provider(h.holder, names),
        period=period(h.start, h.end),
        procedure=_PROCEDURES[h.procedure],
        status=status,
        reopened=h.reopened,
        trainee=provider(h.trainee, names),
    )


_PAYEES = {r.Payee.PROVIDER: dmg_pb2.PAYEE_PROVIDER, r.Payee.PATIENT: dmg_pb2.PAYEE_PATIENT}


def payment(p: r.Payment, names: Names, *, today: dt.date | None = None) -> dmg_pb2.DmgPayment:
    """A fee as the provider sees it; its paid date only when it was paid by ``today`` (given)."""
    paid = p.paid_by(today) if today is not None else None
    return dmg_pb2.DmgPayment(
        year=p.year,
        kind=_KINDS[p.kind],
        amount=money(str(p.amount)),
        payment_date=dates.to_proto(p.registered_on),
        payment_reference=p.reference,
        recovered=p.recovered,
        beneficiary=provider(p.beneficiary, names),
        due_date=dates.to_proto(p.due_by),
        paid_date=dates.to_proto(paid) if paid is not None else None,
        payee=_PAYEES[p.payee],
    )


def money(amount: str) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", amount=amount)


def mailbox_message(
    message: r.Message,
    *,
    message_id: str,
    insurer_code: str,
    patient_proto: common_pb2.Patient,
    names: Names,
    requester_reference: str,
    now: dt.datetime,
) -> dmg_pb2.MailboxMessage:
    """GMD-CLOSURE or GMD-EXTENSION for the outbox, with its content hash."""
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(now.astimezone(dt.UTC))
    out = dmg_pb2.MailboxMessage(
        message_id=message_id,
        insurer_code=insurer_code,
        recipient_inami=message.recipient,
        requester_reference=requester_reference,
        created_time=created,
    )
    if isinstance(message, r.ClosureMessage):
        out.kind = dmg_pb2.MESSAGE_KIND_CLOSURE
        out.closure.CopyFrom(
            dmg_pb2.ClosureMessage(
                patient=patient_proto,
                previous_holder=provider(message.previous_holder, names),
                end_date=dates.to_proto(message.previous_end),
                new_holder=provider(message.new_holder, names),
                start_date=dates.to_proto(message.new_start),
            )
        )
        payload = out.closure.SerializeToString(deterministic=True)
    else:
        out.kind = dmg_pb2.MESSAGE_KIND_EXTENSION
        out.extension.CopyFrom(
            dmg_pb2.ExtensionMessage(
                patient=patient_proto,
                holder=provider(message.holder, names),
                prolongation_date=dates.to_proto(message.prolonged_on),
                contact_date=dates.to_proto(message.contact_date),
                nomenclature_code=message.contact_code,
                new_end_date=dates.to_proto(message.right_end),
            )
        )
        payload = out.extension.SerializeToString(deterministic=True)
    out.content_hash = hashlib.sha256(payload).hexdigest()
    return out
