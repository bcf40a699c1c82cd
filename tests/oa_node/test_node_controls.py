"""Every primary control (SPEC §3.5) through gRPC against a real node: its code, its field, its status,
and nothing changed in the database (the audit trail aside)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import grpc
from node_support import (
    BANK,
    GP_A,
    GP_B,
    GP_NOT_ENROLLED,
    GP_UNKNOWN,
    INSURER,
    OUTSIDER,
    PATIENT,
    PATIENT_2,
    PATIENT_HOUSE,
    PATIENT_LEFT,
    PHARMACIST,
    SPECIALIST,
    TODAY,
    TRAINEE,
    Node,
    by_niss,
    context,
    d,
    node,
    rpc_error,
    seed,
    snapshot,
    start_node,
    stop_node,
)

from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2

__all__ = ["node"]

INVALID, REFUSED, EXISTS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
)
BAD_CHECK_NISS = PATIENT[:-1] + str((int(PATIENT[-1]) + 1) % 10)


def consult(
    requester: str = GP_A,
    patient: common_pb2.PatientSelector | None = None,
    day: dt.date | None = TODAY,
    **ctx: Any,
) -> Callable[[Node], Any]:
    request = oa_pb2.ConsultDmgRequest(
        context=context(requester, **ctx), patient=patient or by_niss(PATIENT), request_date=d(day)
    )
    return lambda n: n.dmg.ConsultDmg(request, timeout=10)


def notify(
    requester: str = GP_A,
    niss: str = PATIENT,
    *,
    contact: dt.date = TODAY,
    code: str = "101010",
    supervisor: str = "",
    reference: str = "ctl",
) -> Callable[[Node], Any]:
    request = oa_pb2.NotifyDmgRequest(
        context=context(requester, reference=reference),
        patient=by_niss(niss),
        contact_date=d(contact),
        nomenclature_code=code,
        supervisor_inami=supervisor,
    )
    return lambda n: n.dmg.NotifyDmg(request, timeout=10)


def member(mutuality: str, number: str) -> common_pb2.PatientSelector:
    return common_pb2.PatientSelector(
        member=common_pb2.MemberNumber(mutuality_code=mutuality, registration_number=number)
    )


def listing(year: int, requester: str = GP_A) -> Callable[[Node], Any]:
    request = oa_pb2.ListHoldingsRequest(context=context(requester), year=year)
    return lambda n: n.dmg.ListHoldings(request, timeout=10)


def enrol(requester: str, account: common_pb2.BankAccount = BANK) -> Callable[[Node], Any]:
    request = oa_pb2.EnrolDmgRequest(context=context(requester), bank_account=account)
    return lambda n: n.dmg.EnrolDmg(request, timeout=10)


def no_date_context(n: Node) -> Any:
    ctx = context(GP_A)
    ctx.ClearField("processing_date")
    request = oa_pb2.ConsultDmgRequest(context=ctx, patient=by_niss(PATIENT), request_date=d(TODAY))
    return n.dmg.ConsultDmg(request, timeout=10)


# (what, call, status, MyCareNet code, field)
CASES: list[tuple[str, Callable[[Node], Any], grpc.StatusCode, int, str]] = [
    ("no nomenclature code", notify(code=""), INVALID, 100, "nomenclature_code"),
    ("no patient", consult(patient=common_pb2.PatientSelector()), INVALID, 100, "patient"),
    ("no processing date", no_date_context, INVALID, 100, "context.processing_date"),
    ("no request date", consult(day=None), INVALID, 100, "request_date"),
    ("trainee without supervisor", notify(TRAINEE), INVALID, 100, "supervisor_inami"),
    ("NISS format", consult(patient=by_niss("12345")), INVALID, 111, "patient.niss"),
    ("INAMI format", consult("1234"), INVALID, 111, "context.requester_inami"),
    ("nomenclature format", notify(code="10101"), INVALID, 111, "nomenclature_code"),
    (
        "IBAN format",
        enrol(GP_NOT_ENROLLED, common_pb2.BankAccount(iban="12")),
        INVALID,
        111,
        "bank_account.iban",
    ),
    ("NISS check digits", consult(patient=by_niss(BAD_CHECK_NISS)), INVALID, 112, "patient.niss"),
    (
        "IBAN check digits",
        enrol(GP_NOT_ENROLLED, common_pb2.BankAccount(iban="BE68539007547035")),
        INVALID,
        112,
        "bank_account.iban",
    ),
    (
        "impossible date",
        lambda n: n.dmg.ConsultDmg(
            oa_pb2.ConsultDmgRequest(
                context=context(),
                patient=by_niss(PATIENT),
                request_date=common_pb2.Date(year=2024, month=2, day=30),
            ),
            timeout=10,
        ),
        INVALID,
        113,
        "request_date",
    ),
    ("NISS unknown", notify(niss=OUTSIDER), INVALID, 120, "patient.niss"),
    ("not affiliated at the date", consult(patient=by_niss(PATIENT_LEFT)), INVALID, 120, "patient.niss"),
    (
        "mutuality unknown",
        consult(patient=member("123", "1000001")),
        INVALID,
        121,
        "patient.member.mutuality_code",
    ),
    (
        "member number unknown",
        consult(patient=member(INSURER, "7777777")),
        INVALID,
        122,
        "patient.member.registration_number",
    ),
    ("102771 is not a contact", notify(code="102771"), INVALID, 130, "nomenclature_code"),
    ("not a consultation code", notify(code="475075"), INVALID, 130, "nomenclature_code"),
    ("sex", consult(patient=by_niss(PATIENT, sex=common_pb2.SEX_FEMALE)), INVALID, 136, "patient.sex"),
    ("specialist notifies", notify(SPECIALIST), INVALID, 140, "context.requester_inami"),
    ("pharmacist consults", consult(PHARMACIST), INVALID, 140, "context.requester_inami"),
    ("specialist enrols", enrol(SPECIALIST), INVALID, 140, "context.requester_inami"),
    ("specialist lists", listing(2024, SPECIALIST), INVALID, 140, "context.requester_inami"),
    ("provider unknown", consult(GP_UNKNOWN), INVALID, 141, "context.requester_inami"),
    ("supervisor unknown", notify(TRAINEE, supervisor=GP_UNKNOWN), INVALID, 141, "supervisor_inami"),
    (
        "trainee names an enrolled GP who is not the supervisor the cadastre records",
        notify(TRAINEE, supervisor=GP_B),
        INVALID,
        156,
        "supervisor_inami",
    ),
    ("consult 2 years back", consult(day=dt.date(2022, 3, 14)), INVALID, 145, "request_date"),
    ("list 3 years back", listing(2021), INVALID, 145, "year"),
    ("consult in the future", consult(day=TODAY + dt.timedelta(days=1)), INVALID, 146, "request_date"),
    ("contact in the future", notify(contact=TODAY + dt.timedelta(days=1)), INVALID, 146, "contact_date"),
    ("list next year", listing(2025), INVALID, 146, "year"),
    (
        "mutuality of another insurer",
        consult(patient=member("200", "1000001")),
        INVALID,
        155,
        "patient.member.mutuality_code",
    ),
    (
        "role inconsistent with the INAMI",
        consult(requester_role=common_pb2.PROVIDER_ROLE_SPECIALIST),
        INVALID,
        158,
        "context.requester_role",
    ),
    ("already holder", notify(GP_A, PATIENT_2, reference="again"), REFUSED, 161, "context.requester_inami"),
    ("medical-house patient", notify(GP_A, PATIENT_HOUSE), REFUSED, 162, "patient"),
    ("not enrolled", notify(GP_NOT_ENROLLED), REFUSED, 163, "context.requester_inami"),
    (
        "contact before the current holder's start",
        notify(GP_B, PATIENT_2, contact=TODAY - dt.timedelta(days=2)),
        REFUSED,
        165,
        "contact_date",
    ),
    ("contact 8 days ago", notify(contact=TODAY - dt.timedelta(days=8)), INVALID, 166, "contact_date"),
    ("enrolled twice", enrol(GP_A), EXISTS, 168, ""),
]


async def test_every_primary_control_rejects_with_its_code_and_changes_nothing(node: Node) -> None:
    await node.notify(GP_A, PATIENT_2, contact=TODAY - dt.timedelta(days=1), reference="setup")
    before = await snapshot(node.app)
    wrong: list[str] = []
    for what, call, status, code, field in CASES:
        error = await rpc_error(call(node))
        fields = [v.field for v in error.violations]
        if error.status != status or error.codes[:1] != (code,) or (field and field not in fields):
            wrong.append(
                f"{what}: got {error.status.name} {error.codes} {fields}, want {status.name} {code} {field}"
            )
    assert wrong == []
    assert await snapshot(node.app) == before


async def test_the_controls_accept_a_valid_request_of_each_kind(node: Node) -> None:
    """The counterpart of the table: the same builders with valid values pass (so the table can fail)."""
    await consult()(node)
    await consult(patient=member(INSURER, "1000001"))(node)
    await consult(patient=by_niss(PATIENT, sex=common_pb2.SEX_MALE))(node)
    await listing(2022)(node)
    reply = await notify(TRAINEE, supervisor=GP_A, reference="trainee")(node)
    assert reply.holder.inami == GP_A
    await enrol(GP_NOT_ENROLLED)(node)


async def test_the_166_limit_is_the_insurers_setting(database_url: str) -> None:
    """An insurer that allows 30 days takes the contact of 8 days ago that the default (7) refuses."""
    started = await start_node(database_url, max_notification_delay_days=30)
    try:
        await seed(started)
        reply = await notify(contact=TODAY - dt.timedelta(days=8))(started)
        assert reply.holder.inami == GP_A
        late = notify(niss=PATIENT_2, contact=TODAY - dt.timedelta(days=31), reference="late")
        error = await rpc_error(late(started))
        assert (error.status, error.codes[:1]) == (INVALID, (166,)), error.violations
    finally:
        await stop_node(started)
