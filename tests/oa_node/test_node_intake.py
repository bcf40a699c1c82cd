"""Invoicing intake against a real node: a contact prolongs the DMG and queues a GMD-EXTENSION in the
same transaction; idempotency by intake reference; a refused 102771; the year-end run."""

from __future__ import annotations

import datetime as dt

import grpc
from node_support import GP_A, GP_NOT_ENROLLED, PATIENT, PATIENT_2, Node, d, node, rpc_error, snapshot
from sqlalchemy import select

from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2 as intake_pb2
from oa_node import models as m

__all__ = ["node"]


async def test_first_contact_of_the_year_prolongs_pays_and_queues_an_extension(node: Node) -> None:
    await node.notify(GP_A, contact=dt.date(2024, 3, 15), reference="open")
    reply = await node.contact(GP_A, PATIENT, dt.date(2025, 2, 3), dt.date(2025, 2, 10), "inv-1")
    effects = reply.effects
    assert not reply.replayed
    assert [(h.holder.inami, h.period.end.year) for h in effects.holdings] == [(GP_A, 2027)]
    assert [(p.year, p.kind, p.beneficiary.inami) for p in effects.payments] == [
        (2025, dmg_pb2.PAYMENT_KIND_ACCELERATED_PROLONGATION, GP_A)
    ]
    assert len(effects.message_ids) == 1
    async with node.app.sessions() as session:
        rows = list((await session.execute(select(m.OutboxMessage))).scalars())
    assert [r.message_id for r in rows] == list(effects.message_ids)
    message = dmg_pb2.MailboxMessage.FromString(rows[0].payload)
    assert message.kind == dmg_pb2.MESSAGE_KIND_EXTENSION
    assert message.recipient_inami == GP_A
    assert message.extension.holder.inami == GP_A
    assert message.extension.nomenclature_code == "101010"
    assert (message.extension.new_end_date.year, message.extension.contact_date.month) == (2027, 2)


async def test_contact_replay_changes_nothing_and_reuse_is_158(node: Node) -> None:
    await node.notify(GP_A, contact=dt.date(2024, 3, 15), reference="open")
    first = await node.contact(GP_A, PATIENT, dt.date(2025, 2, 3), dt.date(2025, 2, 10), "inv-1")
    before = await snapshot(node.app)
    again = await node.contact(GP_A, PATIENT, dt.date(2025, 2, 3), dt.date(2025, 2, 10), "inv-1")
    assert again.replayed
    assert again.effects == first.effects
    error = await rpc_error(node.contact(GP_A, PATIENT_2, dt.date(2025, 2, 3), dt.date(2025, 2, 10), "inv-1"))
    assert error.codes == (158,)
    assert await snapshot(node.app) == before


async def test_contact_by_a_non_holder_only_records_it(node: Node) -> None:
    reply = await node.contact(GP_A, PATIENT_2, dt.date(2024, 3, 1), dt.date(2024, 3, 5), "inv-2")
    assert list(reply.effects.holdings) == []
    assert reply.effects.note


async def test_paper_attestation_by_an_enrolled_gp_is_refused_but_recorded(node: Node) -> None:
    reply = await node.intake.RegisterPaperAttestation(
        intake_pb2.RegisterPaperAttestationRequest(
            intake_reference="paper-1",
            patient_niss=PATIENT,
            provider_inami=GP_A,
            attestation_date=d(dt.date(2024, 2, 1)),
            submission_date=d(dt.date(2024, 3, 1)),
        ),
        timeout=10,
    )
    assert "refused" in reply.effects.note
    assert list(reply.effects.payments) == []


async def test_paper_holder_gets_the_administrative_prolongation_at_the_contact_or_the_year_end(
    node: Node,
) -> None:
    """Paid at the contact of the year that meets its conditions (issue 14); the year end pays one that a
    late 102771 of the year before made due (paper arrives late, seed 000 §1.1.3)."""
    accepted = await node.intake.RegisterPaperAttestation(
        intake_pb2.RegisterPaperAttestationRequest(
            intake_reference="paper-2",
            patient_niss=PATIENT,
            provider_inami=GP_NOT_ENROLLED,
            attestation_date=d(dt.date(2022, 5, 1)),
            submission_date=d(dt.date(2022, 6, 1)),
        ),
        timeout=10,
    )
    assert [p.kind for p in accepted.effects.payments] == [dmg_pb2.PAYMENT_KIND_PAPER_ATTESTATION]
    paid = await node.contact(GP_NOT_ENROLLED, PATIENT, dt.date(2023, 4, 4), dt.date(2023, 5, 5), "inv-3")
    assert [(p.kind, p.year) for p in paid.effects.payments] == [
        (dmg_pb2.PAYMENT_KIND_ADMINISTRATIVE_PROLONGATION, 2023)
    ]
    # Another patient: the contact of 2023 first, the 102771 of 2022 handed in afterwards.
    await node.contact(GP_NOT_ENROLLED, PATIENT_2, dt.date(2023, 4, 4), dt.date(2023, 5, 5), "inv-4")
    await node.intake.RegisterPaperAttestation(
        intake_pb2.RegisterPaperAttestationRequest(
            intake_reference="paper-3",
            patient_niss=PATIENT_2,
            provider_inami=GP_NOT_ENROLLED,
            attestation_date=d(dt.date(2022, 5, 1)),
            submission_date=d(dt.date(2023, 6, 1)),
        ),
        timeout=10,
    )
    early = await rpc_error(
        node.intake.ProcessYearEnd(
            intake_pb2.ProcessYearEndRequest(year=2023, processing_date=d(dt.date(2023, 12, 30))), timeout=10
        )
    )
    assert early.codes == (146,)
    done = await node.intake.ProcessYearEnd(
        intake_pb2.ProcessYearEndRequest(year=2023, processing_date=d(dt.date(2024, 1, 2))), timeout=10
    )
    assert (done.patients_affected, done.payments_created, done.payments_recovered) == (1, 1, 0)
    again = await node.intake.ProcessYearEnd(
        intake_pb2.ProcessYearEndRequest(year=2023, processing_date=d(dt.date(2024, 1, 3))), timeout=10
    )
    assert (again.patients_affected, again.payments_created) == (0, 0)


async def test_intake_for_an_unknown_patient_is_120(node: Node) -> None:
    from node_support import OUTSIDER

    error = await rpc_error(node.contact(GP_A, OUTSIDER, dt.date(2024, 3, 1), dt.date(2024, 3, 5), "inv-x"))
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert error.codes == (120,)


async def test_an_event_before_the_tariff_table_is_145_on_its_date_and_changes_nothing(node: Node) -> None:
    # The back office's input, not an internal error: no DMG fee existed before the table's first year.
    before = await snapshot(node.app)
    paper = intake_pb2.RegisterPaperAttestationRequest(
        intake_reference="paper-2008",
        patient_niss=PATIENT,
        provider_inami=GP_NOT_ENROLLED,
        attestation_date=d(dt.date(2008, 2, 1)),
        submission_date=d(dt.date(2008, 3, 1)),
    )
    error = await rpc_error(node.intake.RegisterPaperAttestation(paper, timeout=10))
    assert (error.status, error.codes) == (grpc.StatusCode.INVALID_ARGUMENT, (145,))
    assert [v.field for v in error.violations] == ["attestation_date"]
    assert "2010" in error.violations[0].description
    error = await rpc_error(
        node.contact(GP_A, PATIENT, dt.date(2009, 2, 3), dt.date(2009, 2, 10), "inv-2009")
    )
    assert (error.status, error.codes) == (grpc.StatusCode.INVALID_ARGUMENT, (145,))
    assert [v.field for v in error.violations] == ["contact_date"]
    assert await snapshot(node.app) == before
