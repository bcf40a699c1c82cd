"""Issue 14, corrections 11 and 12, against a real node: a fee's due and paid dates in the list answer and in
the consult, the tariff lines with their sources, and a 102771 paid in cash reimbursed to the patient (not in
the GP's list) while one in third-party payment is paid to the GP (seed 000 §1.1.1)."""

from __future__ import annotations

import datetime as dt

import pytest
from node_support import GP_A, GP_NOT_ENROLLED, PATIENT, PATIENT_2, TODAY, Node, by_niss, context, d, node

from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2 as intake_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2

__all__ = ["node"]


def _date(value: common_pb2.Date) -> dt.date | None:
    return dt.date(value.year, value.month, value.day) if value.year else None


async def test_the_fee_shows_its_due_date_and_is_paid_once_its_run_has_passed(node: Node) -> None:
    await node.notify(GP_A, contact=TODAY, reference="pay-1")
    consult = oa_pb2.ConsultDmgRequest(context=context(GP_A), patient=by_niss(PATIENT), request_date=d(TODAY))
    found = await node.dmg.ConsultDmg(consult, timeout=10)
    fee = found.requester_payment
    assert (fee.year, fee.kind, fee.beneficiary.inami) == (2024, dmg_pb2.PAYMENT_KIND_NOTIFICATION, GP_A)
    assert fee.payee == dmg_pb2.PAYEE_PROVIDER
    assert _date(fee.due_date) == TODAY + dt.timedelta(days=30)
    assert not fee.HasField("paid_date")  # registered today: the payment run has not passed

    # Two weeks later the weekly run has paid it: the list answer and the consult say when.
    later = TODAY + dt.timedelta(days=14)
    listed = await node.dmg.ListHoldings(
        oa_pb2.ListHoldingsRequest(context=context(GP_A, today=later), year=2024), timeout=10
    )
    (entry,) = listed.entries
    (paid,) = entry.payments
    paid_on = _date(paid.paid_date)
    assert paid_on is not None
    assert TODAY < paid_on <= TODAY + dt.timedelta(days=7)
    assert _date(paid.due_date) == TODAY + dt.timedelta(days=30)
    consult.context.CopyFrom(context(GP_A, today=later))
    again = await node.dmg.ConsultDmg(consult, timeout=10)
    assert _date(again.requester_payment.paid_date) == paid_on
    # Another physician's consult shows no fee of its own.
    other = oa_pb2.ConsultDmgRequest(
        context=context(GP_NOT_ENROLLED, today=later), patient=by_niss(PATIENT), request_date=d(TODAY)
    )
    seen = await node.dmg.ConsultDmg(other, timeout=10)
    assert seen.payment_made_this_year
    assert not seen.HasField("requester_payment")


@pytest.mark.parametrize(
    ("method", "in_list", "payee"),
    [
        (intake_pb2.PAPER_PAYMENT_METHOD_UNSPECIFIED, False, dmg_pb2.PAYEE_PATIENT),
        (intake_pb2.PAPER_PAYMENT_METHOD_CASH, False, dmg_pb2.PAYEE_PATIENT),
        (intake_pb2.PAPER_PAYMENT_METHOD_THIRD_PARTY, True, dmg_pb2.PAYEE_PROVIDER),
    ],
)
async def test_a_102771_paid_in_cash_is_reimbursed_to_the_patient_not_paid_to_the_gp(
    node: Node, method: int, in_list: bool, payee: int
) -> None:
    reply = await node.intake.RegisterPaperAttestation(
        intake_pb2.RegisterPaperAttestationRequest(
            intake_reference="paper-cash",
            patient_niss=PATIENT_2,
            provider_inami=GP_NOT_ENROLLED,
            attestation_date=d(dt.date(2024, 2, 1)),
            submission_date=d(dt.date(2024, 3, 1)),
            payment_method=method,  # type: ignore[arg-type]
        ),
        timeout=10,
    )
    (fee,) = reply.effects.payments
    assert (fee.kind, fee.beneficiary.inami, fee.payee) == (
        dmg_pb2.PAYMENT_KIND_PAPER_ATTESTATION,
        GP_NOT_ENROLLED,
        payee,
    )
    listed = await node.dmg.ListHoldings(
        oa_pb2.ListHoldingsRequest(context=context(GP_NOT_ENROLLED), year=2024), timeout=10
    )
    (entry,) = listed.entries  # the GP holds the DMG either way
    assert entry.patient.niss == PATIENT_2
    assert [(p.kind, p.payee) for p in entry.payments] == (
        [(dmg_pb2.PAYMENT_KIND_PAPER_ATTESTATION, dmg_pb2.PAYEE_PROVIDER)] if in_list else []
    )


async def test_every_tariff_line_says_where_its_amount_comes_from(node: Node) -> None:
    lines = (await node.reference.ListTariffs(rd_pb2.ListTariffsRequest(), timeout=10)).tariffs
    by_key = {(t.year, t.category): t for t in lines}
    chronic = by_key[(2016, "CHRONIC_45_74")]
    assert (chronic.amount.amount, chronic.source, _date(chronic.payable_from)) == (
        "55.00",
        "seed 002",
        dt.date(2016, 7, 1),
    )
    assert by_key[(2016, "STANDARD")].source == "seed 002"
    assert not by_key[(2016, "STANDARD")].HasField("payable_from")
    assert {t.source for t in lines if t.year != 2016} == {"illustrative"}
