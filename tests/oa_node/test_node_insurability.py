"""The insurer node's side of issue 16's second slice, on SQLite and PostgreSQL: ValidateTarification records
the lines it rejects (oa_rejected_tarification, migration 0010), once however often a line is validated; a
tarification office (RequestContext.rejected_invoices_only, seed 003 §8.2.2.7) is answered only for such a
line of its principal at that date; the pharmacist who opened a pharmacy's session is the executor of record
and named in the commitment."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest
from node_support import (
    PATIENT,
    PATIENT_2,
    PHARMACIST,
    TODAY,
    Node,
    by_niss,
    context,
    d,
    node,  # noqa: F401  (the fixture)
    rpc_error,
)
from sqlalchemy import select

from mycarenet_core.db import transaction
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_pb2 as ins
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_service_pb2 as pub
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2 as oa_ins
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2_grpc as oa_ins_grpc
from oa_node import models as m

AUDIT = m.table_of(m.AuditRecord)


def _rights(day: dt.date, niss: str = PATIENT, **extra: object) -> oa_ins.ConsultRightsRequest:
    return oa_ins.ConsultRightsRequest(
        context=context(PHARMACIST, **extra),
        request=pub.ConsultRightsRequest(patient=by_niss(niss), dispensing_date=d(day)),
    )


def _line(line_id: str, day: dt.date) -> oa_ins.TarificationLine:
    """A line billed at a preferential status the insurer's data do not give, without a commitment."""
    return oa_ins.TarificationLine(
        line_id=line_id,
        niss=PATIENT,
        provider_inami=PHARMACIST,
        dispensing_date=d(day),
        status=ins.InsurabilityStatus(ct1="111", ct2="111", preferential_rate=True),
        basis=oa_ins.CONSULTATION_BASIS_CONSULTED_AT_DISPENSING,
    )


async def test_a_tarification_office_consults_only_for_a_rejected_line(node: Node) -> None:  # noqa: F811
    hub = oa_ins_grpc.OaInsurabilityServiceStub(node.channel)
    office = oa_ins_grpc.OaInsurabilityServiceStub(node.office)

    refused = await rpc_error(hub.ConsultRights(_rights(TODAY, rejected_invoices_only=True), timeout=10))
    assert (refused.status, refused.reason, refused.code) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "NO_REJECTED_INVOICE",
        140,
    )

    # Two validations of the same lines, one of them at once twice: each rejected line is recorded once.
    lines = oa_ins.ValidateTarificationRequest(lines=[_line("inv-1/1", TODAY), _line("inv-1/2", TODAY)])
    answers = await asyncio.gather(*(office.ValidateTarification(lines, timeout=10) for _ in range(3)))
    for answer in answers:
        assert [(r.verdict, r.reason) for r in answer.results] == [
            (oa_ins.TARIFICATION_VERDICT_REJECTED, "NO_COMMITMENT")
        ] * 2
    async with transaction(node.app.sessions) as session:
        rows = (await session.execute(select(m.RejectedTarificationRow))).scalars().all()
    assert sorted((r.line_id, r.provider_inami, r.niss, r.dispensing_date, r.reason) for r in rows) == [
        ("inv-1/1", PHARMACIST, PATIENT, TODAY, "NO_COMMITMENT"),
        ("inv-1/2", PHARMACIST, PATIENT, TODAY, "NO_COMMITMENT"),
    ]

    # Now the office is answered for that patient and date, and only for those.
    answered = await hub.ConsultRights(_rights(TODAY, rejected_invoices_only=True), timeout=10)
    assert answered.commitment.coverage.start == d(TODAY)
    member = await hub.GetMemberData(
        oa_ins.GetMemberDataRequest(
            context=context(PHARMACIST, rejected_invoices_only=True),
            request=pub.GetMemberDataRequest(patient=by_niss(PATIENT), date=d(TODAY)),
        ),
        timeout=10,
    )
    assert member.member_data.patient.niss == PATIENT
    for request in (
        _rights(TODAY - dt.timedelta(days=1), rejected_invoices_only=True),
        _rights(TODAY, PATIENT_2, rejected_invoices_only=True),
    ):
        other = await rpc_error(hub.ConsultRights(request, timeout=10))
        assert other.reason == "NO_REJECTED_INVOICE"


@pytest.mark.parametrize("user", ["", PHARMACIST])
async def test_the_pharmacist_of_a_session_is_named_in_the_commitment_and_the_audit(
    node: Node,  # noqa: F811
    user: str,
) -> None:
    hub = oa_ins_grpc.OaInsurabilityServiceStub(node.channel)
    reference = f"ref-{user or 'own'}"
    answer = await hub.ConsultRights(
        oa_ins.ConsultRightsRequest(
            context=context(PHARMACIST, reference=reference, session_user_inami=user),
            request=pub.ConsultRightsRequest(patient=by_niss(PATIENT), dispensing_date=d(TODAY)),
        ),
        timeout=10,
    )
    assert answer.commitment.pharmacist_inami == user
    async with transaction(node.app.sessions) as session:
        row = (
            await session.execute(
                select(AUDIT.c.executor_id, AUDIT.c.executor_kind).where(
                    AUDIT.c.requester_reference == reference
                )
            )
        ).one()
    assert tuple(row) == (user or PHARMACIST, "SUBJECT_KIND_PROVIDER")
    bad = await rpc_error(
        hub.ConsultRights(
            oa_ins.ConsultRightsRequest(
                context=context(PHARMACIST, session_user_inami="123"),
                request=pub.ConsultRightsRequest(patient=by_niss(PATIENT), dispensing_date=d(TODAY)),
            ),
            timeout=10,
        )
    )
    assert bad.status is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in bad.violations] == ["context.session_user_inami"]
